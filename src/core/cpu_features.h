// Run-time CPU feature detection for kernel dispatch.
#pragma once

namespace kvserve {

enum class CpuLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false, avx512bf16 = false;
};

const CpuFeatures& cpu_features();
// Best level this CPU supports, capped by the KVSERVE_CPU environment variable
// ("scalar", "avx2", "avx512") so tests and benchmarks can force a path.
CpuLevel cpu_level();
const char* cpu_level_name(CpuLevel level);

}  // namespace kvserve
