// Cache-line-aligned storage for activation buffers. The matmul kernels load 64-byte vectors
// of activation rows; an unaligned row makes every load straddle two cache lines, which cost
// the f16 / f32 GEMM 10-15 % (bench kernels). With rows a multiple of 16 floats long, a
// 64-byte-aligned buffer keeps every row aligned.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace kvserve {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{Align}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete (p, std::align_val_t{Align}); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const {
    return true;
  }
};

// A std::vector<float> whose data() is 64-byte aligned.
using AlignedFloats = std::vector<float, AlignedAllocator<float>>;

}  // namespace kvserve
