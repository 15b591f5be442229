#include "core/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace kvserve {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.f16c = __builtin_cpu_supports("f16c");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
    return c;
  }();
  return f;
}

CpuLevel cpu_level() {
  static const CpuLevel level = [] {
    const CpuFeatures& f = cpu_features();
    CpuLevel best = CpuLevel::kScalar;
    if (f.avx2 && f.fma && f.f16c) best = CpuLevel::kAvx2;
    if (best == CpuLevel::kAvx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni)
      best = CpuLevel::kAvx512;
    if (const char* env = std::getenv("KVSERVE_CPU")) {
      CpuLevel cap = best;
      if (!std::strcmp(env, "scalar")) cap = CpuLevel::kScalar;
      if (!std::strcmp(env, "avx2")) cap = CpuLevel::kAvx2;
      if (cap < best) best = cap;
    }
    return best;
  }();
  return level;
}

const char* cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::kScalar: return "scalar";
    case CpuLevel::kAvx2: return "avx2";
    case CpuLevel::kAvx512: return "avx512";
  }
  return "?";
}

}  // namespace kvserve
