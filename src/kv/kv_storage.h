// KvStorage: owns the K and V memory of every layer, laid out by block.
// Per layer, K and V are each [n_blocks][n_head_kv][block_size][head_dim] elements of `type`,
// so one block of one kv head is a contiguous [block_size][head_dim] tile for the attention
// kernel. The memory is an anonymous mapping: pages are committed when first written, so a large
// budget costs address space, not RSS, until it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/status.h"
#include "kv/block_pool.h"

namespace kvserve {

struct KvLayout {
  int n_layer = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int block_size = 16;
  DType type = DType::kF16;

  size_t bytes_per_token() const;  // K and V, all layers
  size_t bytes_per_block() const { return bytes_per_token() * block_size; }
  // K or V tile of one kv head in one block: [block_size][head_dim].
  size_t tile_bytes() const;
};

// KV element types the attention kernels read in issue 2 (f32, f16, bf16).
bool kv_type_supported(DType t);

class KvStorage {
 public:
  // Maps n_blocks blocks of memory. Fails (not aborts) when the mapping is refused.
  static Result<std::unique_ptr<KvStorage>> create(const KvLayout& layout, int n_blocks);
  ~KvStorage();
  KvStorage(const KvStorage&) = delete;
  KvStorage& operator=(const KvStorage&) = delete;

  const KvLayout& layout() const { return layout_; }
  int n_blocks() const { return n_blocks_; }
  size_t bytes_total() const { return bytes_; }

  // [block_size][head_dim] tile of K (or V) for (layer, block, kv head).
  uint8_t* k_tile(int layer, BlockId block, int head) { return tile(layer, 0, block, head); }
  uint8_t* v_tile(int layer, BlockId block, int head) { return tile(layer, 1, block, head); }
  const uint8_t* k_tile(int layer, BlockId block, int head) const {
    return const_cast<KvStorage*>(this)->tile(layer, 0, block, head);
  }
  const uint8_t* v_tile(int layer, BlockId block, int head) const {
    return const_cast<KvStorage*>(this)->tile(layer, 1, block, head);
  }

  // Stores one token's K and V ([n_head_kv][head_dim] f32 each) at (block, slot), converting
  // to the storage type.
  void write_token(int layer, BlockId block, int slot, const float* k, const float* v);
  // Copies every layer's K/V of block src into dst (copy-on-write support).
  void copy_block(BlockId src, BlockId dst);

 private:
  KvStorage(const KvLayout& layout, int n_blocks, void* base, size_t bytes);
  uint8_t* tile(int layer, int kv, BlockId block, int head);

  KvLayout layout_;
  int n_blocks_;
  uint8_t* base_;  // [n_layer][2 (K, V)][n_blocks][n_head_kv][block_size][head_dim]
  size_t bytes_;
};

// "512MiB", "2GiB", "1000000", "64KiB", "1.5GB" -> bytes; error on anything else.
Result<size_t> parse_byte_size(const std::string& text);
std::string format_bytes(double bytes);  // "1.50 GiB"

}  // namespace kvserve
