// A read-only view of a weight tensor that lives in a mapped file or in memory the Model owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace kvserve {

struct TensorView {
  std::string name;
  DType type = DType::kF32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the innermost (contiguous) dimension, as in GGUF
  const void* data = nullptr;    // nullptr: tensor absent (optional tensors such as biases)
  size_t n_bytes = 0;
  // Optional copy of the weights laid out for one kernel table's matmul (kernels::prepack);
  // packed_for identifies that table, and other tables ignore the copy.
  const uint8_t* packed = nullptr;
  const void* packed_for = nullptr;

  bool present() const { return data != nullptr; }
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  // A weight matrix is [rows][cols] = [out][in]: ne[0] = cols (in), ne[1] = rows (out).
  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_stride() const { return row_bytes(type, ne[0]); }
  const uint8_t* row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + static_cast<size_t>(r) * row_stride();
  }
};

}  // namespace kvserve
