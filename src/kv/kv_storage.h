// KvStorage: owns the K and V memory of every layer, laid out by block.
// Per layer and block, the block's K tiles of every kv head, then its V tiles, a tile being one kv
// head of one block: [block_size] rows of head_dim elements of k_type / v_type (row formats and
// headers in kv/kv_type.h), a contiguous run of memory for the attention kernel. A block's K and
// V of one layer are thus one contiguous region, which the attention kernel reads head after
// head (long runs are what the hardware prefetcher follows). The memory is an
// anonymous mapping (transparent huge pages advised), made resident at creation or as blocks are
// first written (KvCommit). q4 K adds f16 staging rows for
// blocks that are not full yet (see write_token); bytes_total() counts the tiles only, as the
// staging is bounded by the partial blocks in use (one per running sequence, plus CoW copies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/bytes.h"  // parse_byte_size, format_bytes: moved to core, still reached from here
#include "core/status.h"
#include "kv/block_pool.h"
#include "kv/kv_type.h"

namespace kvserve {

// When the KV memory becomes resident.
enum class KvCommit {
  // Page by page as blocks are first written: a large budget costs address space, not RSS,
  // until it is used, but decode steps pay the page faults (and the zeroing) of every new block.
  kOnWrite,
  // All of it at creation, as llama.cpp (which clears its KV buffer) and vLLM (which allocates
  // it up front) do: steps never fault, and a budget the machine cannot hold fails at start-up
  // instead of mid-request.
  kAtStart,
};

struct KvLayout {
  int n_layer = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int block_size = 16;
  KvType k_type = KvType::kF16;
  KvType v_type = KvType::kF16;

  // K and V of one block, all layers and kv heads, scales and q4 headers included (exact).
  size_t bytes_per_block() const;
  // bytes_per_block() / block_size: exact, fractional when a q4 K header does not divide evenly.
  double bytes_per_token() const { return static_cast<double>(bytes_per_block()) / block_size; }
  // One kv head of one block: header plus [block_size] rows.
  size_t k_tile_bytes() const { return kv_tile_bytes(k_type, KvRole::kK, head_dim, block_size); }
  size_t v_tile_bytes() const { return kv_tile_bytes(v_type, KvRole::kV, head_dim, block_size); }
  // Bytes between consecutive token rows of a tile.
  size_t k_row_stride() const { return kv_row_stride(k_type, KvRole::kK, head_dim); }
  size_t v_row_stride() const { return kv_row_stride(v_type, KvRole::kV, head_dim); }
  // ok, or invalid_argument for a type / head_dim / block_size combination the kernels cannot do.
  Status check() const;

  // What the storage can do with this layout, so callers ask instead of testing types. All
  // three are false only for q4 K, quantized per channel over a whole block: its rows are not
  // self-contained, and a block that is not full lives in f16 staging rows until it is.
  // A token's rows can be copied to another slot on their own (H2O compaction, copy_token).
  bool can_copy_tokens() const { return !k_quantized_per_block(); }
  // Blocks can be exported to host memory and imported back (swap preemption).
  bool can_export_blocks() const { return !k_quantized_per_block(); }
  // Distinct slots may be written from several threads at once (write_token); otherwise one
  // thread writes, in slot order.
  bool parallel_token_writes() const { return !k_quantized_per_block(); }

 private:
  bool k_quantized_per_block() const { return k_type == KvType::kQ4; }
};

// Where the attention kernel reads a tile's rows: rows[t * stride] is token slot t, in `type`
// (q4 K: `header` holds the per-channel scales and mins; nullptr otherwise).
struct KvTileView {
  const uint8_t* rows;
  const uint8_t* header;
  KvType type;
  size_t stride;
};

class KvStorage {
 public:
  // Maps n_blocks blocks of memory. Fails (not aborts) when the layout is refused by
  // KvLayout::check(), or the mapping (or with kAtStart, committing it) is refused.
  static Result<std::unique_ptr<KvStorage>> create(const KvLayout& layout, int n_blocks,
                                                   KvCommit commit = KvCommit::kOnWrite);
  ~KvStorage();
  KvStorage(const KvStorage&) = delete;
  KvStorage& operator=(const KvStorage&) = delete;

  const KvLayout& layout() const { return layout_; }
  int n_blocks() const { return n_blocks_; }
  size_t bytes_total() const { return bytes_; }

  // Tile of K (or V) for (layer, block, kv head): header, then [block_size] rows.
  uint8_t* k_tile(int layer, BlockId block, int head) { return tile(layer, 0, block, head); }
  uint8_t* v_tile(int layer, BlockId block, int head) { return tile(layer, 1, block, head); }
  const uint8_t* k_tile(int layer, BlockId block, int head) const {
    return const_cast<KvStorage*>(this)->tile(layer, 0, block, head);
  }
  const uint8_t* v_tile(int layer, BlockId block, int head) const {
    return const_cast<KvStorage*>(this)->tile(layer, 1, block, head);
  }
  // What attention reads for (layer, block, kv head). For q4 K, a block that is not full yet
  // reads its f16 staging rows instead of the (not yet quantized) tile.
  KvTileView k_view(int layer, BlockId block, int head) const;
  KvTileView v_view(int layer, BlockId block, int head) const;

  // Stores one token's K and V ([n_head_kv][head_dim] f32 each) at (block, slot), converting
  // to the storage types. q4 K goes to the block's f16 staging rows; writing the last slot
  // (block_size - 1) of a layer quantizes that layer's K tile from them, and the staging is
  // released once every layer's tile is quantized, so a block's slots must be written
  // with block_size - 1 last. Threads: with layout().parallel_token_writes(), writes of
  // distinct slots may run at once (the runner writes rows over its thread pool); otherwise
  // (q4 K: shared staging) one thread writes them in slot order. Either way, before attention
  // reads them.
  void write_token(int layer, BlockId block, int slot, const float* k, const float* v);
  // Copies every layer's K/V of block src into dst (copy-on-write support), staging included.
  void copy_block(BlockId src, BlockId dst);
  // Copies one token's K and V rows, every layer and kv head, from (src, src_slot) to
  // (dst, dst_slot) (H2O compaction). Only where layout().can_copy_tokens().
  void copy_token(BlockId src, int src_slot, BlockId dst, int dst_slot);
  // A block's K/V, every layer, to or from layout().bytes_per_block() bytes of host memory (swap
  // preemption). Only where layout().can_export_blocks().
  void export_block(BlockId block, uint8_t* dst) const;
  void import_block(const uint8_t* src, BlockId block);
  // The block's last reference is gone: drops its q4 staging rows (a partial block's contents
  // are dead; a full block keeps its quantized tile, which the prefix cache may hit again).
  // Called by KvCacheManager wherever a block's last reference goes; harmless for any block.
  void on_block_freed(BlockId block);

  // Blocks holding q4 K staging rows now (0 unless k_type is q4): bounded by the partial
  // blocks in use. staging_slots_touched(): staging slots ever handed out (the memory
  // committed for staging is this many slots).
  int n_staged_blocks() const { return n_staged_; }
  int staging_slots_touched() const { return static_cast<int>(stage_next_); }

 private:
  KvStorage(const KvLayout& layout, int n_blocks, void* base, size_t bytes, void* stage,
            size_t stage_bytes);
  // One layer of one block: its K tiles of every kv head, then its V tiles (region_bytes()).
  uint8_t* region(int layer, BlockId block);
  size_t region_bytes() const;
  uint8_t* tile(int layer, int kv, BlockId block, int head);
  // f16 staging rows [block_size][head_dim] of (slot, layer, head).
  uint16_t* stage_rows(int32_t stage, int layer, int head);
  int32_t acquire_stage(BlockId block);
  void release_stage(BlockId block);

  KvLayout layout_;
  int n_blocks_;
  uint8_t* base_;  // [n_layer][n_blocks] x ([n_head_kv] K tiles, then [n_head_kv] V tiles)
  size_t bytes_;
  // q4 K staging: stage_ is [n_blocks][n_layer][n_head_kv][block_size][head_dim] f16 of reserved
  // address space, slots reused last-in-first-out so only the slots ever live at once get
  // committed. stage_of_[b] = block b's slot or -1; kstate_[b * n_layer + l] = where layer l's
  // K of block b lives (kEmpty: no K written, or only staged rows since dropped; kStaged: staging
  // rows; kQuantized: the q4 tile).
  uint16_t* stage_ = nullptr;
  size_t stage_bytes_ = 0;
  std::vector<int32_t> stage_of_;
  enum : uint8_t { kEmpty, kStaged, kQuantized };
  std::vector<uint8_t> kstate_;
  std::vector<int32_t> stage_free_;
  int32_t stage_next_ = 0;
  int n_staged_ = 0;
};

}  // namespace kvserve
