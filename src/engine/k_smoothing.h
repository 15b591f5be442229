// K smoothing for per-token int8 K. Keys carry a few channels far larger than the rest, mostly a
// near-constant offset in the slowest RoPE pair ("massive activations"), so one int8 scale per
// token and head spends its range on them and flattens the channels that tell keys apart. We
// store k' = (k - m) / s and score with q' = q * s:
//   q' . k' = q . k - q . m
// The second term is the same for every key a query sees, so softmax, and therefore attention,
// is unchanged, while the stored rows are centred and have even channels (SmoothAttention, as in
// QServe, plus the offset); a Hadamard rotation of both (QuaRot) then spreads what outliers
// remain. On stories260K (head_dim 8) this takes q8's mean KL from 1.9e-3 to 3.5e-4. m and s are
// per layer and kv channel, measured once at start-up on a fixed calibration text through an f32
// cache (deterministic, so prefix-cache keys stay valid); s is equal within each RoPE pair, so it
// commutes with the rotation. With attention sinks the sink keys are scored with a differently
// rotated query, whose q . m differs, so m is zero there.
#pragma once

#include <vector>

#include "core/status.h"
#include "kv/kv_policy.h"
#include "kv/kv_storage.h"
#include "model/model.h"

namespace kvserve {

struct KSmoothing {
  std::vector<std::vector<float>> offset;  // [n_layer][kv_dim] m (post-RoPE)
  std::vector<std::vector<float>> div;     // [n_layer][kv_dim] 1 / s
  std::vector<std::vector<float>> q_mul;   // [n_layer][q_dim] s of each query head's kv head
};

// In place, each of n consecutive vectors of length hd (a power of two): x <- H x / sqrt(hd),
// H the Sylvester-Hadamard matrix. Orthonormal, so (Hq).(Hk) = q.k; it spreads a key's
// remaining outliers over all its channels before per-token quantization (as in QuaRot).
void hadamard_rows(float* x, int n, int hd);
inline bool hadamard_ok(int hd) {
  return hd >= 2 && (hd & (hd - 1)) == 0;
}

// Runs the calibration text (at most max_tokens) through the model with f32 K/V and returns
// the factors. with_offset = false: m = 0 (attention sinks).
Result<KSmoothing> calibrate_k_smoothing(const Model& model, bool with_offset,
                                         int max_tokens = 256);

// The factors a runner over `layout` under `policy` needs: calibrated for int8 K (q8), without
// the offset under attention sinks; empty for other K types, and when calibration fails (the
// cache then runs unsmoothed: only quality changes).
KSmoothing k_smoothing_for(const Model& model, const KvLayout& layout, const KvPolicy& policy);

}  // namespace kvserve
