// Synthetic GGUF models in the shapes of real ones, with deterministic pseudo-random weights and
// a working SentencePiece-style vocabulary: for benchmarks and tests at realistic sizes without
// downloading anything. Same preset, dtype and seed give byte-identical files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/config.h"

namespace kvserve {

struct SynthOptions {
  std::string preset;         // one of synth_preset_names()
  DType dtype = DType::kF32;  // 2-D weights and token embedding: f32, f16, bf16, q8_0, q4_0
  std::string out_path;
  uint64_t seed = 0;
};

// Writes the model tensor by tensor (at most one tensor's bytes in memory, so llama-3-8b works).
// Errors: invalid_argument for an unknown preset or dtype, io_error when the file cannot be
// written (a partial file is removed).
Status write_synth_model(const SynthOptions& opts);

// "demo", "stories15m", "smollm-135m", "qwen2.5-0.5b", "tinyllama-1.1b", "mistral-7b",
// "llama-3-8b".
std::vector<std::string> synth_preset_names();
// The config a preset's file will load as (name "kvserve-synth-<preset>"); not_found if unknown.
Result<ModelConfig> synth_preset(std::string_view name);

// The synthetic vocabulary: <unk>, <s>, </s>, 256 byte tokens, then unique pieces with
// descending scores. Exposed for tests. n_vocab must be at least 260.
struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 6 byte
};
SynthVocab synth_vocab(int n_vocab);

}  // namespace kvserve
