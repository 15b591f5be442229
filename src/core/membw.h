// Memory read bandwidth of this machine, measured: the ceiling ("roofline") for decode, which
// reads every weight and the whole KV cache once per token.
#pragma once

#include <cstddef>

#include "core/thread_pool.h"

namespace kvserve {

// Streams a buffer of `bytes` (touched first, so it is resident) with every thread of the pool,
// `reps` times, and returns the best rate in bytes per second.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int reps = 5);

}  // namespace kvserve
