// Output processing: what happens to a sequence's logits row after the forward pass. Its next
// token is chosen (sampled, or forced when scoring) with its logprobs; the token is appended and
// the stop rules applied (EOS, stop strings, max_tokens, the length limit); and the events for
// its request's channel are built, holding back text that may still become a stop string or
// ends in an incomplete UTF-8 character. Engine thread only, except choose_token (below).
#pragma once

#include <string>
#include <vector>

#include "engine/request.h"
#include "engine/scheduler.h"
#include "model/model.h"

namespace kvserve {

struct ChosenToken {
  int32_t token = 0;
  bool has_lp = false;        // the spec asked for logprobs (and seq is no padding row)
  TokenLogprob lp;            // when has_lp
  std::vector<float> logits;  // [n_vocab] raw logits, when the spec keeps them
};

// seq's next token from its logits row [n_vocab] (the sampler edits the row in place).
// Touches only seq's own state, so the rows of a step may be chosen in parallel.
ChosenToken choose_token(Sequence& seq, float* logits, int n_vocab);

class OutputProcessor {
 public:
  // max_len: the longest a sequence may grow (prompt + generated).
  OutputProcessor(const Model& model, int max_len) : model_(model), max_len_(max_len) {}

  // Appends c.token to seq's tokens and text. Returns why seq ends with it ("stop": EOS or a
  // stop string; "length": max_tokens or the length limit), or "" when it goes on.
  std::string append(Sequence& seq, const ChosenToken& c) const;
  // The event reporting seq's newest token, with the text that is safe to send now (all of it
  // when finished); advances seq.n_sent.
  SeqEvent token_event(Sequence& seq, ChosenToken c, bool finished) const;
  // The closing event of seq: whatever text was held back, and the counts.
  static SeqEvent final_event(Sequence& seq, const std::string& reason, const std::string& error);

 private:
  const Model& model_;
  int max_len_;
};

}  // namespace kvserve
