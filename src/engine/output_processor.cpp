#include "engine/output_processor.h"

#include <algorithm>
#include <cmath>

#include "core/utf8.h"

namespace kvserve {

namespace {

// Bytes at the end of s that could begin one of the stop strings (so must not be sent yet).
size_t stop_holdback(const std::string& s, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops) {
    for (size_t k = std::min(stop.size() - 1, s.size()); k > hold; --k) {
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

// Log-softmax of the model's raw logits: the distribution before the repetition penalty,
// temperature and truncation (top-k/p, min-p) shape what the sampler draws from. This is what
// vLLM returns by default (logprobs_mode=raw_logprobs).
struct LogSoftmax {
  float mx = 0, log_z = 0;
  float operator()(float x) const { return x - mx - log_z; }
};

LogSoftmax log_softmax(const float* logits, int n_vocab) {
  LogSoftmax ls;
  ls.mx = logits[0];
  for (int i = 1; i < n_vocab; ++i) ls.mx = std::max(ls.mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - ls.mx);
  ls.log_z = static_cast<float>(std::log(sum));
  return ls;
}

// The k most likely tokens with their log-probabilities, best first (lowest id on ties).
std::vector<std::pair<int32_t, float>> top_k_logprobs(const float* logits, int n_vocab, int k,
                                                      const LogSoftmax& ls) {
  std::vector<int32_t> ids(n_vocab);
  for (int i = 0; i < n_vocab; ++i) ids[i] = i;
  k = std::min(k, n_vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  std::vector<std::pair<int32_t, float>> top;
  for (int i = 0; i < k; ++i) top.push_back({ids[i], ls(logits[ids[i]])});
  return top;
}

// Appends token t's text to seq.text; true when a stop string now appears (the text is cut
// before it). A match must end in the new text, so earlier text is searched only as far back
// as a stop string could reach.
bool append_text(Sequence& seq, const Tokenizer& tok, int32_t t) {
  const size_t old = seq.text.size();
  seq.text += tok.decode_token(seq.tokens[seq.tokens.size() - 2], t);
  size_t cut = std::string::npos;
  for (const auto& stop : seq.spec->stop) {
    if (stop.empty()) continue;
    const size_t from = old >= stop.size() ? old - stop.size() + 1 : 0;
    cut = std::min(cut, seq.text.find(stop, from));
  }
  if (cut == std::string::npos) return false;
  seq.text.resize(cut);
  return true;
}

}  // namespace

ChosenToken choose_token(Sequence& seq, float* logits, int n_vocab) {
  const SeqSpec& spec = *seq.spec;
  ChosenToken out;
  out.has_lp = !seq.pad && spec.n_logprobs >= 0;
  // The sampler edits the row in place: logprobs and kept logits read the model's own values.
  if (spec.keep_logits) out.logits.assign(logits, logits + n_vocab);
  std::vector<float> raw;  // [n_vocab]
  LogSoftmax ls;
  if (out.has_lp) {
    raw.assign(logits, logits + n_vocab);
    ls = log_softmax(raw.data(), n_vocab);
    out.lp.top = top_k_logprobs(raw.data(), n_vocab, spec.n_logprobs, ls);
  }
  const size_t i = static_cast<size_t>(seq.n_generated());
  out.token =
      i < spec.forced.size() ? spec.forced[i] : seq.sampler.sample(logits, n_vocab, seq.tokens);
  if (out.has_lp) {
    out.lp.token = out.token;
    out.lp.logprob = ls(raw[out.token]);
  }
  return out;
}

std::string OutputProcessor::append(Sequence& seq, const ChosenToken& c) const {
  const SeqSpec& spec = *seq.spec;
  const int32_t t = c.token;
  seq.tokens.push_back(t);
  if (model_.is_stop_token(t) && !spec.ignore_eos) return "stop";  // EOS adds no text
  if (model_.tokenizer && append_text(seq, *model_.tokenizer, t)) return "stop";
  if (seq.n_generated() >= spec.max_tokens || seq.n_known() >= max_len_) return "length";
  return "";
}

SeqEvent OutputProcessor::token_event(Sequence& seq, ChosenToken c, bool finished) const {
  SeqEvent e;
  e.index = seq.spec->index;
  e.tokens.push_back(c.token);
  if (c.has_lp) e.logprobs.push_back(std::move(c.lp));
  if (!c.logits.empty()) e.logits.push_back(std::move(c.logits));
  size_t end = seq.text.size();
  if (!finished) {
    end -= std::max(stop_holdback(seq.text, seq.spec->stop), utf8_incomplete_tail(seq.text));
  }
  if (end > seq.n_sent) {
    e.text = seq.text.substr(seq.n_sent, end - seq.n_sent);
    seq.n_sent = end;
  }
  return e;
}

SeqEvent OutputProcessor::final_event(Sequence& seq, const std::string& reason,
                                      const std::string& error) {
  SeqEvent e;
  e.index = seq.spec->index;
  e.finished = true;
  e.finish_reason = reason;
  e.error = error;
  if (seq.text.size() > seq.n_sent) e.text = seq.text.substr(seq.n_sent);
  e.n_prompt_tokens = seq.n_prompt;
  e.n_completion_tokens = seq.n_generated();
  e.n_cached_tokens = seq.n_cached;
  return e;
}

}  // namespace kvserve
