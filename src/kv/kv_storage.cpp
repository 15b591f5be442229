#include "kv/kv_storage.h"

#include <sys/mman.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "core/assert.h"
#include "kernels/quant.h"

namespace kvserve {

size_t KvLayout::tile_bytes() const { return row_bytes(type, head_dim) * block_size; }

size_t KvLayout::bytes_per_token() const {
  return 2 * static_cast<size_t>(n_layer) * n_head_kv * row_bytes(type, head_dim);
}

bool kv_type_supported(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

Result<std::unique_ptr<KvStorage>> KvStorage::create(const KvLayout& layout, int n_blocks) {
  if (!kv_type_supported(layout.type)) {
    return unsupported(std::string("KV type ") + dtype_name(layout.type) +
                       " is not supported (use f32, f16 or bf16)");
  }
  if (layout.block_size < 1 || layout.block_size > 256) {
    return invalid_argument("block size must be in [1, 256], got " +
                            std::to_string(layout.block_size));
  }
  if (n_blocks < 1) return invalid_argument("the KV cache needs at least one block");
  const size_t bytes = layout.bytes_per_block() * static_cast<size_t>(n_blocks);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    return out_of_memory("cannot map " + format_bytes(static_cast<double>(bytes)) +
                         " for the KV cache: " + std::strerror(errno));
  }
  return std::unique_ptr<KvStorage>(new KvStorage(layout, n_blocks, p, bytes));
}

KvStorage::KvStorage(const KvLayout& layout, int n_blocks, void* base, size_t bytes)
    : layout_(layout), n_blocks_(n_blocks), base_(static_cast<uint8_t*>(base)), bytes_(bytes) {}

KvStorage::~KvStorage() { munmap(base_, bytes_); }

uint8_t* KvStorage::tile(int layer, int kv, BlockId block, int head) {
  KV_ASSERT(layer >= 0 && layer < layout_.n_layer && block >= 0 && block < n_blocks_);
  const size_t tile = layout_.tile_bytes();
  const size_t block_bytes = tile * layout_.n_head_kv;
  const size_t idx = (static_cast<size_t>(layer) * 2 + kv) * n_blocks_ + block;
  return base_ + idx * block_bytes + static_cast<size_t>(head) * tile;
}

void KvStorage::write_token(int layer, BlockId block, int slot, const float* k, const float* v) {
  const size_t rb = row_bytes(layout_.type, layout_.head_dim);
  for (int h = 0; h < layout_.n_head_kv; ++h) {
    kernels::quantize_row(layout_.type, k + h * layout_.head_dim, k_tile(layer, block, h) + slot * rb,
                          layout_.head_dim);
    kernels::quantize_row(layout_.type, v + h * layout_.head_dim, v_tile(layer, block, h) + slot * rb,
                          layout_.head_dim);
  }
}

void KvStorage::copy_block(BlockId src, BlockId dst) {
  const size_t block_bytes = layout_.tile_bytes() * layout_.n_head_kv;
  for (int l = 0; l < layout_.n_layer; ++l) {
    std::memcpy(k_tile(l, dst, 0), k_tile(l, src, 0), block_bytes);
    std::memcpy(v_tile(l, dst, 0), v_tile(l, src, 0), block_bytes);
  }
}

Result<size_t> parse_byte_size(const std::string& text) {
  char* end = nullptr;
  const double num = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(num >= 0) || !std::isfinite(num)) {
    return invalid_argument("not a byte size: '" + text + "' (e.g. 512MiB, 2GiB, 1000000)");
  }
  std::string unit(end);
  double mul = 1;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "KiB" || unit == "K" || unit == "k") mul = 1024.0;
  else if (unit == "MiB" || unit == "M") mul = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "G") mul = 1024.0 * 1024 * 1024;
  else if (unit == "TiB" || unit == "T") mul = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB") mul = 1e3;
  else if (unit == "MB") mul = 1e6;
  else if (unit == "GB") mul = 1e9;
  else if (unit == "TB") mul = 1e12;
  else return invalid_argument("unknown size unit '" + unit + "' in '" + text + "'");
  const double bytes = num * mul;
  if (bytes > 1e18) return invalid_argument("byte size too large: '" + text + "'");
  return static_cast<size_t>(bytes);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

}  // namespace kvserve
