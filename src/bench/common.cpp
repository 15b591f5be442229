#include "bench/common.h"

#include <thread>

namespace kvserve::bench {

int thread_count(int n_threads) {
  return n_threads > 0 ? n_threads : static_cast<int>(std::thread::hardware_concurrency());
}

}  // namespace kvserve::bench
