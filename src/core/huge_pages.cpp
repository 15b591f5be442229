#include "core/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

#include "core/memory_info.h"

namespace kvserve {

std::shared_ptr<void> alloc_huge_pages(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t len = (bytes + kHuge - 1) / kHuge * kHuge;
  // The callers fill the whole buffer: past the memory available that ends in the OOM killer,
  // while nullptr lets them fall back (weights read from the file mapping, packed per call).
  if (const auto avail = available_memory(); avail && len > *avail) return nullptr;
  void* p =
      ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // Trim the over-allocation to a 2 MiB-aligned range.
  const uintptr_t base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (base + kHuge - 1) / kHuge * kHuge;
  if (start > base) ::munmap(p, start - base);
  const uintptr_t end = base + len + kHuge;
  if (end > start + len) ::munmap(reinterpret_cast<void*>(start + len), end - (start + len));
  void* q = reinterpret_cast<void*>(start);
  ::madvise(q, len, MADV_HUGEPAGE);
  return std::shared_ptr<void>(q, [len](void* m) { ::munmap(m, len); });
}

}  // namespace kvserve
