// Anonymous memory in transparent huge pages, for buffers that are streamed end to end (packed
// weights, weights copied out of a file mapping): with 4 KiB pages, reading them costs a TLB
// miss every 64 cache lines.
#pragma once

#include <cstddef>
#include <memory>

namespace kvserve {

// `bytes` (rounded up to 2 MiB) of zeroed memory, 2 MiB-aligned, advised into huge pages where
// the system allows (advice only). nullptr when the mapping fails or `bytes` exceed the memory
// available (core/memory_info.h).
std::shared_ptr<void> alloc_huge_pages(size_t bytes);

}  // namespace kvserve
