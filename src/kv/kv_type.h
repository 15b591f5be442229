// Element types of the KV cache, chosen separately for K and V, and the byte layout of their
// rows and tiles. A tile is one kv head of one block: block_size token rows, consecutive rows a
// fixed stride apart (the attention kernel reads runs of rows), optionally after a header.
//
// Row formats (hd = head_dim; fp16 values are IEEE half, little endian, stored unaligned):
//   f32, f16, bf16  hd elements.
//   q8              hd int8 then an fp16 scale d = absmax / 127 (symmetric): x = d * q.
//   fp8             hd e4m3 bytes then an fp16 scale d = absmax / 448: x = d * e4m3(b).
//   q4 (V)          per token, asymmetric 4-bit in groups of G = min(hd, 64) channels:
//                   [hd / G] x (fp16 scale, fp16 min) then hd / 2 nibble bytes; x = min + scale *
//                   n.
//   q4 (K)          per channel over the block's tokens (KIVI): the tile starts with a header
//                   of [hd] fp16 scales and [hd] fp16 mins, then [block_size][hd / 2] nibbles;
//                   x[t][c] = min[c] + scale[c] * n[t][c]. A block's K is quantized when the
//                   block is full; until then its rows live in f16 in KvStorage's staging area.
// Nibble packing (both q4 forms): with hd % 16 == 0, each 16 channels use 8 bytes, byte j
// holding channel j in its low nibble and channel j + 8 in its high nibble; otherwise byte j
// holds channels 2j (low) and 2j + 1 (high). See q4_nibble().
//
// Sizes: q4 K costs hd / 2 + 4 hd / block_size bytes per token and head, so it reaches the
// 0.3x-of-f16 target only with block_size >= 32 (KIVI's group of 32 tokens); the sizes below
// are exact for any block size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kvserve {

enum class KvType : uint8_t { kF32, kF16, kBF16, kQ8, kFP8, kQ4 };

// Which half of the cache a type is used for: q4 lays K and V out differently.
enum class KvRole : uint8_t { kK, kV };

const char* kv_type_name(KvType t);  // "f32", "f16", "bf16", "q8", "fp8", "q4"
// Accepts the names above and "fp8-e4m3" / "e4m3"; nullopt otherwise.
std::optional<KvType> kv_type_from_name(std::string_view name);
// "f32, f16, bf16, q8, fp8 (fp8-e4m3), q4" for help texts and errors.
const char* kv_type_list();
inline bool kv_type_is_quantized(KvType t) {
  return t >= KvType::kQ8;
}

// Channels per q4 V group.
inline int q4_group(int hd) {
  return hd < 64 ? hd : 64;
}

// Bytes from one token row to the next in a tile.
inline size_t kv_row_stride(KvType t, KvRole r, int hd) {
  switch (t) {
    case KvType::kF32:
      return static_cast<size_t>(hd) * 4;
    case KvType::kF16:
    case KvType::kBF16:
      return static_cast<size_t>(hd) * 2;
    case KvType::kQ8:
    case KvType::kFP8:
      return static_cast<size_t>(hd) + 2;
    case KvType::kQ4:
      return r == KvRole::kK
                 ? static_cast<size_t>(hd) / 2
                 : static_cast<size_t>(hd) / 2 + 4 * static_cast<size_t>(hd / q4_group(hd));
  }
  return 0;
}
// Bytes before the first row of a tile (q4 K: the per-channel scales and mins).
inline size_t kv_tile_header(KvType t, KvRole r, int hd) {
  return t == KvType::kQ4 && r == KvRole::kK ? static_cast<size_t>(hd) * 4 : 0;
}
// Bytes of one tile ([block_size] rows of one kv head, header included).
inline size_t kv_tile_bytes(KvType t, KvRole r, int hd, int block_size) {
  return kv_tile_header(t, r, hd) + kv_row_stride(t, r, hd) * static_cast<size_t>(block_size);
}
// Bytes per token and kv head, header amortised over the block (exact, possibly fractional).
inline double kv_bytes_per_token_head(KvType t, KvRole r, int hd, int block_size) {
  return static_cast<double>(kv_tile_bytes(t, r, hd, block_size)) / block_size;
}

// Tokens per KV block when none is asked for: 32 when K or V is q4, else 16. q4 K spends
// 4 * hd header bytes per block on its per-channel scales and mins, so it needs KIVI's group of
// 32 tokens to reach 0.3x f16 (q4 K and V: 0.297x at 32, 0.328x at 16); the other types do not
// depend on the block size, and 16 keeps the last, partly filled block of a sequence small.
constexpr int kDefaultBlockSize = 16;
constexpr int kQ4DefaultBlockSize = 32;
inline int default_block_size(KvType k, KvType v) {
  return k == KvType::kQ4 || v == KvType::kQ4 ? kQ4DefaultBlockSize : kDefaultBlockSize;
}

// ok, or invalid_argument naming the type, role and what head_dim / block_size it needs, for
// a combination the storage and attention kernels cannot do.
Status kv_type_check(KvType t, KvRole r, int hd, int block_size);

// Byte offset and shift of channel c's nibble within a q4 nibble row of hd channels.
inline void q4_nibble(int c, int hd, int* byte, int* shift) {
  if (hd % 16 == 0) {
    *byte = (c / 16) * 8 + (c % 8);
    *shift = (c % 16) < 8 ? 0 : 4;
  } else {
    *byte = c / 2;
    *shift = (c % 2) * 4;
  }
}

}  // namespace kvserve
