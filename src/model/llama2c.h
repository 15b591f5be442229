// llama2.c checkpoints (github.com/karpathy/llama2.c, run.c / runq.c), see docs/formats.md:
//   v0: legacy fp32, a 7 x int32 header and no magic (negative vocab_size = unshared classifier);
//   v1: fp32, "ak42" magic, 256-byte header;
//   v2: Q8_0, "ak42" magic, 256-byte header, int8 values with one fp32 scale per 32 elements.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/model.h"

namespace kvserve {

// "ak42" read as a little-endian uint32: the first 4 bytes of llama2.c v1/v2 files.
constexpr uint32_t kLlama2cMagic = 0x616b3432;

// Loads any of the versions above (detected by magic; no magic means v0, whose header is
// sanity-checked so that a random file gives "not a GGUF or llama2.c file").
// fp32 weights point into a private read-only mapping of the file; Q8 weights are converted to
// DType::kQ8_0 rows when every 32-element group lies within one row, else dequantized to f32.
// The tokenizer comes from opts.tokenizer_path, else tokenizer.bin or tok*.bin beside the model;
// with none, Model::tokenizer stays null.
Result<std::unique_ptr<Model>> load_llama2c(const std::string& path, const LoadOptions& opts = {});

// The tokenizer file load_llama2c would use for a model at model_path ("" if none is found).
std::string find_llama2c_tokenizer(const std::string& model_path);

}  // namespace kvserve
