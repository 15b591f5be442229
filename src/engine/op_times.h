// Wall time of each op of the forward pass, summed over the forwards a ModelRunner is given it
// for: where a decode step's time goes (`kvserve bench batch --ops`). Off by default; when on,
// two clock reads per op and layer (about 10 us per 30-layer step).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace kvserve {

enum class Op : int {
  kNorm,       // the RMS norms (and the residual adds they carry)
  kQkv,        // the Q, K, V projections (and their biases)
  kRope,       // RoPE (and K smoothing), the new K/V rows written, the layer's batch set-up
  kAttention,  // attention over the paged cache
  kOutProj,    // the attention output projection
  kGateUp,     // the FFN gate and up projections
  kSwiGlu,     // SwiGLU
  kDown,       // the FFN down projection
  kLmHead,     // the output projection to the vocabulary (and the final norm)
  kCount
};
constexpr int kNumOps = static_cast<int>(Op::kCount);

// A stable lower-case name ("qkv", "lm_head", ...).
const char* op_name(Op op);

struct OpTimes {
  std::array<double, kNumOps> seconds{};
  int64_t forwards = 0;
};

// Adds the wall time of its scope to times->seconds[op]; does nothing when times is null.
class OpTimer {
 public:
  OpTimer(OpTimes* times, Op op) : times_(times), op_(op) {
    if (times_) t0_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() { stop(); }
  // Records the time so far now rather than at the end of the scope.
  void stop() {
    if (!times_) return;
    const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0_;
    times_->seconds[static_cast<int>(op_)] += d.count();
    times_ = nullptr;
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpTimes* times_;
  Op op_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace kvserve
