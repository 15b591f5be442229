// tokenizer_from_gguf: builds a tokenizer from the GGUF tokenizer.ggml.* metadata.

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_bpe.h"
#include "model/tokenizer_spm.h"

namespace kvserve {

namespace {

constexpr const char* kModel = "tokenizer.ggml.model";
constexpr const char* kTokens = "tokenizer.ggml.tokens";
constexpr const char* kScores = "tokenizer.ggml.scores";
constexpr const char* kTypes = "tokenizer.ggml.token_type";
constexpr const char* kMerges = "tokenizer.ggml.merges";
constexpr const char* kBos = "tokenizer.ggml.bos_token_id";
constexpr const char* kEos = "tokenizer.ggml.eos_token_id";
constexpr const char* kUnk = "tokenizer.ggml.unknown_token_id";
constexpr const char* kAddBos = "tokenizer.ggml.add_bos_token";
constexpr const char* kAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
constexpr const char* kPre = "tokenizer.ggml.pre";

std::string where(const GgufFile& g, const char* key) {
  return g.path() + ": " + key;
}

// An array of `family` (strings, integers or floats) with exactly n elements (n < 0: any).
// nullptr with an ok status when the key is absent.
Status get_array(const GgufFile& g, const char* key, const char* family, int64_t n,
                 const GgufValue** out) {
  *out = nullptr;
  const GgufValue* v = g.find(key);
  if (!v) return Status::ok();
  bool fits = false;
  if (v->is_array()) {
    const GgufType t = v->elem_type;
    if (std::string_view(family) == "string") {
      fits = t == GgufType::kString;
    } else if (std::string_view(family) == "float") {
      fits = t == GgufType::kFloat32 || t == GgufType::kFloat64;
    } else {
      fits = t != GgufType::kString && t != GgufType::kFloat32 && t != GgufType::kFloat64 &&
             t != GgufType::kBool && t != GgufType::kArray;
    }
  }
  if (!fits) {
    return invalid_argument(
        where(g, key) + " must be an array of " + family + ", got " + gguf_type_name(v->type) +
        (v->is_array() ? std::string(" of ") + gguf_type_name(v->elem_type) : std::string()));
  }
  if (n >= 0 && static_cast<int64_t>(v->array_size()) != n) {
    return corrupt(where(g, key) + " has " + std::to_string(v->array_size()) +
                   " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  }
  *out = v;
  return Status::ok();
}

// A token id (default when absent); must lie in [0, n).
Status get_token_id(const GgufFile& g, const char* key, int64_t n, int32_t def, int32_t* out) {
  *out = def;
  if (!g.find(key)) return Status::ok();
  Result<int64_t> r = g.get_int(key);
  if (!r) return r.status();
  if (*r < 0 || *r >= n) {
    return corrupt(where(g, key) + " = " + std::to_string(*r) + " is outside the vocabulary of " +
                   std::to_string(n) + " tokens");
  }
  *out = static_cast<int32_t>(*r);
  return Status::ok();
}

Status get_flag(const GgufFile& g, const char* key, bool def, bool* out) {
  *out = def;
  if (!g.find(key)) return Status::ok();
  Result<bool> r = g.get_bool(key);
  if (!r) return r.status();
  *out = *r;
  return Status::ok();
}

// tokenizer.ggml.model -> true for "llama" (SentencePiece), false for "gpt2" (BPE).
Result<bool> read_model_is_spm(const GgufFile& gguf) {
  if (!gguf.find(kModel)) return not_found(where(gguf, kModel) + " is missing (no tokenizer)");
  KV_ASSIGN_OR_RETURN(std::string model, gguf.get_string(kModel));
  if (model == "none") return not_found(where(gguf, kModel) + " is \"none\" (no tokenizer)");
  const bool spm = model == "llama";
  if (!spm && model != "gpt2") {
    return unsupported(where(gguf, kModel) + " = \"" + model +
                       "\": only \"llama\" and \"gpt2\" tokenizers are supported");
  }
  return spm;
}

// The tokenizer.ggml.tokens array: present, non-empty, at most INT32_MAX entries.
Status read_tokens(const GgufFile& gguf, const GgufValue** out) {
  KV_RETURN_IF_ERROR(get_array(gguf, kTokens, "string", -1, out));
  if (!*out) return not_found(where(gguf, kTokens) + " is missing");
  const int64_t n = static_cast<int64_t>((*out)->strs.size());
  if (n == 0) return corrupt(where(gguf, kTokens) + " is empty");
  if (n > INT32_MAX) return corrupt(where(gguf, kTokens) + " has too many entries");
  return Status::ok();
}

// The n token types (each in 0..6), all normal when types_v is null.
Status read_token_types(const GgufFile& gguf, const GgufValue* types_v, int64_t n,
                        std::vector<int32_t>* types) {
  types->assign(static_cast<size_t>(n), token_type::kNormal);
  if (!types_v) return Status::ok();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = types_v->ints[i];
    if (t < 0 || t > token_type::kByte) {
      return corrupt(where(gguf, kTypes) + "[" + std::to_string(i) + "] = " + std::to_string(t) +
                     " is not a token type (0..6)");
    }
    (*types)[i] = static_cast<int32_t>(t);
  }
  return Status::ok();
}

struct SpecialIds {
  int32_t bos = -1, eos = -1, unk = -1;  // -1: none
  bool add_bos = false;
};

// BOS, EOS, unknown ids and add_bos, with SentencePiece's defaults (1, 2, 0, true) for spm.
Status read_special_ids(const GgufFile& gguf, int64_t n, bool spm, SpecialIds* ids) {
  KV_RETURN_IF_ERROR(get_token_id(gguf, kBos, n, spm && n > 1 ? 1 : -1, &ids->bos));
  KV_RETURN_IF_ERROR(get_token_id(gguf, kEos, n, spm && n > 2 ? 2 : -1, &ids->eos));
  KV_RETURN_IF_ERROR(get_token_id(gguf, kUnk, n, spm ? 0 : -1, &ids->unk));
  ids->add_bos = spm;
  return get_flag(gguf, kAddBos, spm, &ids->add_bos);
}

// Without token types: BOS/EOS become control (and spm's unk unknown); "<0xXX>" is detected by
// the tokenizers.
void mark_special_types(const SpecialIds& ids, bool spm, std::vector<int32_t>& types) {
  if (ids.bos >= 0) types[ids.bos] = token_type::kControl;
  if (ids.eos >= 0) types[ids.eos] = token_type::kControl;
  if (spm && ids.unk >= 0 && ids.unk != ids.bos && ids.unk != ids.eos) {
    types[ids.unk] = token_type::kUnknown;
  }
}

// The SentencePiece ("llama") tokenizer; scores_v null: every score 0.
Result<std::unique_ptr<Tokenizer>> make_spm(const GgufFile& gguf, std::vector<std::string> tokens,
                                            const GgufValue* scores_v, std::vector<int32_t> types,
                                            const SpecialIds& ids) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> scores(static_cast<size_t>(n), 0.0f);
  if (scores_v) {
    for (int64_t i = 0; i < n; ++i) scores[i] = static_cast<float>(scores_v->floats[i]);
  }
  SpmOptions opts;
  opts.bos = ids.bos;
  opts.eos = ids.eos;
  opts.unk = ids.unk;
  opts.add_bos = ids.add_bos;
  KV_RETURN_IF_ERROR(get_flag(gguf, kAddSpacePrefix, true, &opts.add_space_prefix));
  opts.space_symbol = std::string(kSpmSpaceSymbol);
  opts.kind = "llama";
  return std::unique_ptr<Tokenizer>(std::make_unique<SpmTokenizer>(
      std::move(tokens), std::move(scores), std::move(types), std::move(opts)));
}

// The tokenizer.ggml.merges array (required for gpt2), each entry "left right".
Status read_merges(const GgufFile& gguf, const GgufValue** out) {
  KV_RETURN_IF_ERROR(get_array(gguf, kMerges, "string", -1, out));
  if (!*out) return not_found(where(gguf, kMerges) + " is missing (required for gpt2)");
  for (size_t i = 0; i < (*out)->strs.size(); ++i) {
    const std::string& m = (*out)->strs[i];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return corrupt(where(gguf, kMerges) + "[" + std::to_string(i) + "] = \"" + m.substr(0, 64) +
                     "\" is not \"left right\"");
    }
  }
  return Status::ok();
}

// The byte-level BPE ("gpt2") tokenizer.
Result<std::unique_ptr<Tokenizer>> make_bpe(const GgufFile& gguf, std::vector<std::string> tokens,
                                            std::vector<int32_t> types, const SpecialIds& ids) {
  const GgufValue* merges_v = nullptr;
  KV_RETURN_IF_ERROR(read_merges(gguf, &merges_v));
  BpeOptions opts;
  opts.bos = ids.bos;
  opts.eos = ids.eos;
  opts.unk = ids.unk;
  opts.add_bos = ids.add_bos;
  if (gguf.find(kPre)) {
    KV_ASSIGN_OR_RETURN(opts.pre, gguf.get_string(kPre));
  }
  return std::unique_ptr<Tokenizer>(std::make_unique<BpeTokenizer>(
      std::move(tokens), merges_v->strs, std::move(types), std::move(opts)));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> tokenizer_from_gguf(const GgufFile& gguf) {
  KV_ASSIGN_OR_RETURN(const bool spm, read_model_is_spm(gguf));
  const GgufValue* tokens_v = nullptr;
  KV_RETURN_IF_ERROR(read_tokens(gguf, &tokens_v));
  const int64_t n = static_cast<int64_t>(tokens_v->strs.size());

  const GgufValue* scores_v = nullptr;
  const GgufValue* types_v = nullptr;
  KV_RETURN_IF_ERROR(get_array(gguf, kScores, "float", n, &scores_v));
  KV_RETURN_IF_ERROR(get_array(gguf, kTypes, "integer", n, &types_v));
  std::vector<int32_t> types;
  KV_RETURN_IF_ERROR(read_token_types(gguf, types_v, n, &types));

  SpecialIds ids;
  KV_RETURN_IF_ERROR(read_special_ids(gguf, n, spm, &ids));
  if (!types_v) mark_special_types(ids, spm, types);

  if (spm) return make_spm(gguf, tokens_v->strs, scores_v, std::move(types), ids);
  return make_bpe(gguf, tokens_v->strs, std::move(types), ids);
}

}  // namespace kvserve
