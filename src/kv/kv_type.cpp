#include "kv/kv_type.h"

namespace kvserve {

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::kF32:
      return "f32";
    case KvType::kF16:
      return "f16";
    case KvType::kBF16:
      return "bf16";
    case KvType::kQ8:
      return "q8";
    case KvType::kFP8:
      return "fp8";
    case KvType::kQ4:
      return "q4";
  }
  return "?";
}

std::optional<KvType> kv_type_from_name(std::string_view name) {
  if (name == "f32") return KvType::kF32;
  if (name == "f16") return KvType::kF16;
  if (name == "bf16") return KvType::kBF16;
  if (name == "q8") return KvType::kQ8;
  if (name == "fp8" || name == "fp8-e4m3" || name == "e4m3") return KvType::kFP8;
  if (name == "q4") return KvType::kQ4;
  return std::nullopt;
}

const char* kv_type_list() {
  return "f32, f16, bf16, q8, fp8 (fp8-e4m3), q4";
}

Status kv_type_check(KvType t, KvRole r, int hd, int block_size) {
  const std::string what =
      std::string(r == KvRole::kK ? "K" : "V") + " cache type " + kv_type_name(t);
  if (hd < 1) return invalid_argument(what + ": head_dim must be positive");
  if (block_size < 1 || block_size > 256) {
    return invalid_argument("block size must be in [1, 256], got " + std::to_string(block_size));
  }
  if (t == KvType::kQ4) {
    if (hd % 2 != 0) {
      return invalid_argument(what + " needs an even head_dim, got " + std::to_string(hd));
    }
    if (r == KvRole::kV && hd % q4_group(hd) != 0) {
      return invalid_argument(what + " quantizes V in groups of 64 channels: head_dim " +
                              std::to_string(hd) + " must be at most 64 or a multiple of 64");
    }
  }
  return Status::ok();
}

}  // namespace kvserve
