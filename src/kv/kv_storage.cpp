#include "kv/kv_storage.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "core/assert.h"
#include "core/memory_info.h"
#include "kv/kv_quant.h"

namespace kvserve {

size_t KvLayout::bytes_per_block() const {
  return static_cast<size_t>(n_layer) * n_head_kv * (k_tile_bytes() + v_tile_bytes());
}

Status KvLayout::check() const {
  if (n_layer < 1 || n_head_kv < 1 || head_dim < 1) {
    return invalid_argument("KV layout needs positive layers, kv heads and head_dim");
  }
  KV_RETURN_IF_ERROR(kv_type_check(k_type, KvRole::kK, head_dim, block_size));
  return kv_type_check(v_type, KvRole::kV, head_dim, block_size);
}

namespace {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Makes [p, p + bytes) resident. The kernel populates it in one call where it can (no fault per
// page, and ENOMEM instead of the OOM killer); older kernels get one write per page.
Status commit_pages(void* p, size_t bytes) {
  if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0) return Status::ok();
  if (errno != EINVAL) {
    return out_of_memory("cannot commit " + format_bytes(static_cast<double>(bytes)) +
                         " for the KV cache: " + std::strerror(errno));
  }
  volatile uint8_t* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < bytes; i += 4096) b[i] = 0;
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<KvStorage>> KvStorage::create(const KvLayout& layout, int n_blocks,
                                                     KvCommit commit) {
  KV_RETURN_IF_ERROR(layout.check());
  if (n_blocks < 1) return invalid_argument("the KV cache needs at least one block");
  const size_t bytes = layout.bytes_per_block() * static_cast<size_t>(n_blocks);
  // Committing more than the machine (or the cgroup) has does not fail: the OOM killer ends
  // the process part-way through. So a budget beyond what is available is refused up front.
  if (commit == KvCommit::kAtStart) {
    if (const auto avail = available_memory(); avail && bytes > *avail) {
      return out_of_memory("cannot commit " + format_bytes(static_cast<double>(bytes)) +
                           " for the KV cache: only " + format_bytes(static_cast<double>(*avail)) +
                           " of memory is available; lower the KV budget");
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return out_of_memory("cannot map " + format_bytes(static_cast<double>(bytes)) +
                         " for the KV cache: " + std::strerror(errno));
  }
  // Transparent huge pages where the system allows them (advice only): attention walks many
  // short tiles scattered over the mapping, and with 4 KiB pages nearly every tile is a TLB miss.
  madvise(p, bytes, MADV_HUGEPAGE);
  if (commit == KvCommit::kAtStart) {
    if (Status st = commit_pages(p, bytes); !st.is_ok()) {
      munmap(p, bytes);
      return st;
    }
  }
  void* stage = nullptr;
  size_t stage_bytes = 0;
  if (layout.k_type == KvType::kQ4) {
    // Address space for one staging slot per block; only slots in use get committed.
    stage_bytes = static_cast<size_t>(n_blocks) * layout.n_layer * layout.n_head_kv *
                  layout.block_size * layout.head_dim * 2;
    stage = mmap(nullptr, stage_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stage == MAP_FAILED) {
      munmap(p, bytes);
      return out_of_memory("cannot map " + format_bytes(static_cast<double>(stage_bytes)) +
                           " for the q4 K staging rows: " + std::strerror(errno));
    }
  }
  return std::unique_ptr<KvStorage>(new KvStorage(layout, n_blocks, p, bytes, stage, stage_bytes));
}

KvStorage::KvStorage(const KvLayout& layout, int n_blocks, void* base, size_t bytes, void* stage,
                     size_t stage_bytes)
    : layout_(layout),
      n_blocks_(n_blocks),
      base_(static_cast<uint8_t*>(base)),
      bytes_(bytes),
      stage_(static_cast<uint16_t*>(stage)),
      stage_bytes_(stage_bytes) {
  if (stage_) {
    stage_of_.assign(n_blocks, -1);
    kstate_.assign(static_cast<size_t>(n_blocks) * layout.n_layer, kEmpty);
  }
}

KvStorage::~KvStorage() {
  munmap(base_, bytes_);
  if (stage_) munmap(stage_, stage_bytes_);
}

size_t KvStorage::region_bytes() const {
  return static_cast<size_t>(layout_.n_head_kv) * (layout_.k_tile_bytes() + layout_.v_tile_bytes());
}

uint8_t* KvStorage::region(int layer, BlockId block) {
  KV_ASSERT(layer >= 0 && layer < layout_.n_layer && block >= 0 && block < n_blocks_);
  return base_ + (static_cast<size_t>(layer) * n_blocks_ + block) * region_bytes();
}

uint8_t* KvStorage::tile(int layer, int kv, BlockId block, int head) {
  const size_t kt = layout_.k_tile_bytes(), vt = layout_.v_tile_bytes();
  const size_t heads = static_cast<size_t>(layout_.n_head_kv);
  return region(layer, block) + (kv == 0 ? head * kt : heads * kt + head * vt);
}

uint16_t* KvStorage::stage_rows(int32_t stage, int layer, int head) {
  const size_t rows = static_cast<size_t>(layout_.block_size) * layout_.head_dim;
  return stage_ +
         ((static_cast<size_t>(stage) * layout_.n_layer + layer) * layout_.n_head_kv + head) * rows;
}

int32_t KvStorage::acquire_stage(BlockId block) {
  int32_t s = stage_of_[block];
  if (s >= 0) return s;
  if (!stage_free_.empty()) {
    s = stage_free_.back();  // last in, first out: reuse committed memory
    stage_free_.pop_back();
  } else {
    s = stage_next_++;
  }
  stage_of_[block] = s;
  ++n_staged_;
  return s;
}

void KvStorage::release_stage(BlockId block) {
  if (!stage_ || stage_of_[block] < 0) return;
  stage_free_.push_back(stage_of_[block]);
  stage_of_[block] = -1;
  --n_staged_;
}

KvTileView KvStorage::k_view(int layer, BlockId block, int head) const {
  const KvLayout& L = layout_;
  if (stage_ && kstate_[static_cast<size_t>(block) * L.n_layer + layer] == kStaged) {
    const uint16_t* rows = const_cast<KvStorage*>(this)->stage_rows(stage_of_[block], layer, head);
    return {reinterpret_cast<const uint8_t*>(rows), nullptr, KvType::kF16,
            static_cast<size_t>(L.head_dim) * 2};
  }
  const uint8_t* t = k_tile(layer, block, head);
  const size_t hdr = kv_tile_header(L.k_type, KvRole::kK, L.head_dim);
  return {t + hdr, hdr ? t : nullptr, L.k_type, L.k_row_stride()};
}

KvTileView KvStorage::v_view(int layer, BlockId block, int head) const {
  return {v_tile(layer, block, head), nullptr, layout_.v_type, layout_.v_row_stride()};
}

void KvStorage::write_token(int layer, BlockId block, int slot, const float* k, const float* v) {
  const KvLayout& L = layout_;
  const int hd = L.head_dim;
  const size_t ks = L.k_row_stride(), vs = L.v_row_stride();
  if (L.k_type == KvType::kQ4) {
    uint8_t* state = &kstate_[static_cast<size_t>(block) * L.n_layer];
    const int32_t st = acquire_stage(block);
    if (state[layer] == kQuantized) {
      // A slot of a full block is rewritten: back to staging rows, from the quantized tile.
      for (int h = 0; h < L.n_head_kv; ++h) {
        uint16_t* rows = stage_rows(st, layer, h);
        const uint8_t* tile = k_tile(layer, block, h);
        for (int t = 0; t < L.block_size; ++t) {
          for (int c = 0; c < hd; ++c) {
            rows[static_cast<size_t>(t) * hd + c] = fp32_to_fp16(kv_decode_q4k(tile, hd, t, c));
          }
        }
      }
    }
    state[layer] = kStaged;
    for (int h = 0; h < L.n_head_kv; ++h)
      fp32_to_fp16_row(k + h * hd, stage_rows(st, layer, h) + static_cast<size_t>(slot) * hd, hd);
    if (slot == L.block_size - 1) {
      for (int h = 0; h < L.n_head_kv; ++h) {
        kv_encode_q4k_tile(stage_rows(st, layer, h), L.block_size, hd, k_tile(layer, block, h));
      }
      state[layer] = kQuantized;
      if (std::find(state, state + L.n_layer, kStaged) == state + L.n_layer) release_stage(block);
    }
  } else {
    for (int h = 0; h < L.n_head_kv; ++h) {
      kv_encode_row(L.k_type, k + h * hd, k_tile(layer, block, h) + slot * ks, hd);
    }
  }
  for (int h = 0; h < L.n_head_kv; ++h) {
    kv_encode_row(L.v_type, v + h * hd, v_tile(layer, block, h) + slot * vs, hd);
  }
}

void KvStorage::copy_block(BlockId src, BlockId dst) {
  for (int l = 0; l < layout_.n_layer; ++l) {
    std::memcpy(region(l, dst), region(l, src), region_bytes());
  }
  if (!stage_) return;
  release_stage(dst);
  const size_t nl = layout_.n_layer;
  std::copy_n(kstate_.begin() + src * nl, nl, kstate_.begin() + dst * nl);
  if (stage_of_[src] < 0) return;
  const int32_t d = acquire_stage(dst);
  const size_t slot_elems = static_cast<size_t>(layout_.n_layer) * layout_.n_head_kv *
                            layout_.block_size * layout_.head_dim;
  std::memcpy(stage_rows(d, 0, 0), stage_rows(stage_of_[src], 0, 0), slot_elems * 2);
}

void KvStorage::on_block_freed(BlockId block) {
  KV_ASSERT(block >= 0 && block < n_blocks_);
  if (!stage_) return;
  release_stage(block);
  // Staged rows are gone; a quantized tile stays what the block holds (a cached block is read
  // again, and a later write into it re-stages from the tile).
  uint8_t* state = &kstate_[static_cast<size_t>(block) * layout_.n_layer];
  for (int l = 0; l < layout_.n_layer; ++l) {
    if (state[l] == kStaged) state[l] = kEmpty;
  }
}

void KvStorage::copy_token(BlockId src, int src_slot, BlockId dst, int dst_slot) {
  const KvLayout& L = layout_;
  KV_ASSERT(L.can_copy_tokens());
  const size_t kh = kv_tile_header(L.k_type, KvRole::kK, L.head_dim);
  const size_t vh = kv_tile_header(L.v_type, KvRole::kV, L.head_dim);
  const size_t ks = L.k_row_stride(), vs = L.v_row_stride();
  for (int l = 0; l < L.n_layer; ++l) {
    for (int h = 0; h < L.n_head_kv; ++h) {
      std::memcpy(k_tile(l, dst, h) + kh + dst_slot * ks, k_tile(l, src, h) + kh + src_slot * ks,
                  ks);
      std::memcpy(v_tile(l, dst, h) + vh + dst_slot * vs, v_tile(l, src, h) + vh + src_slot * vs,
                  vs);
    }
  }
}

void KvStorage::export_block(BlockId block, uint8_t* dst) const {
  KV_ASSERT(layout_.can_export_blocks());
  for (int l = 0; l < layout_.n_layer; ++l) {
    const uint8_t* r = const_cast<KvStorage*>(this)->region(l, block);
    dst = std::copy_n(r, region_bytes(), dst);
  }
}

void KvStorage::import_block(const uint8_t* src, BlockId block) {
  KV_ASSERT(layout_.can_export_blocks());
  for (int l = 0; l < layout_.n_layer; ++l, src += region_bytes()) {
    std::memcpy(region(l, block), src, region_bytes());
  }
}

}  // namespace kvserve
