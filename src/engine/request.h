// A generation request as the engine loop sees it, and the channel its results travel back on.
//
// A request holds one or more sequences (n > 1, or a batch of prompts); each sequence is
// scheduled on its own and reports through the request's single channel, tagged with its
// `index`. HTTP threads create requests and read channels; the engine loop writes channels.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/sampler.h"

namespace kvserve {

using Clock = std::chrono::steady_clock;

struct SeqSpec {
  std::vector<int32_t> prompt;  // token ids, non-empty
  int max_tokens = 16;          // tokens to generate at most (>= 0)
  SamplingParams sampling;      // its own sampler, seeded with sampling.seed
  bool ignore_eos = false;
  std::vector<std::string> stop;  // stop strings; the text ends before the first match
  int n_logprobs = -1;            // -1: off; k >= 0: sampled token's logprob + top-k alternatives
  int index = 0;                  // choice index in the response
  // Teacher forcing (scoring): the generated tokens are these, in order, instead of samples;
  // max_tokens must not exceed their count. Empty: sample.
  std::vector<int32_t> forced;
  bool keep_logits = false;  // report the logits each token was chosen from (SeqEvent::logits)
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // [k] (id, logprob), best first
};

// One report from the engine about one sequence: new tokens, or the end.
struct SeqEvent {
  int index = 0;
  std::vector<int32_t> tokens;  // newly generated ids (the EOS id too, though it has no text)
  std::string text;             // new text, held back while it could start a stop string
  std::vector<TokenLogprob> logprobs;      // one per token when the spec asked for logprobs
  std::vector<std::vector<float>> logits;  // [tokens][n_vocab] raw logits, with keep_logits
  bool finished = false;
  std::string finish_reason;  // when finished: "stop", "length", "cancelled" or "error"
  std::string error;          // when finish_reason == "error"
  int n_prompt_tokens = 0;    // when finished
  int n_completion_tokens = 0;
  int n_cached_tokens = 0;  // when finished: prompt tokens served from the prefix cache
};

// Thread-safe mailbox from the engine loop (single writer) to one HTTP handler (single reader).
class RequestChannel {
 public:
  void push(SeqEvent e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  // Takes every queued event, waiting up to `timeout` for the first. Empty on timeout.
  std::vector<SeqEvent> wait(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    std::vector<SeqEvent> out(std::make_move_iterator(events_.begin()),
                              std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }
  // Set by the reader (client gone); the engine frees the request's blocks on its next step.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SeqEvent> events_;  // guarded by mu_
  std::atomic<bool> cancelled_{false};
};

struct Request {
  std::vector<SeqSpec> seqs;
  std::string cache_salt;  // extra key for the prefix cache (isolates tenants)
  // false: a private computation that neither reads nor registers cached blocks (scoring).
  bool use_prefix_cache = true;
  // The no-KV-cache baseline: every step recomputes the whole sequence from position 0 and
  // keeps no K/V afterwards (implies use_prefix_cache = false).
  bool recompute = false;
  std::shared_ptr<RequestChannel> channel = std::make_shared<RequestChannel>();
  Clock::time_point arrival = Clock::now();  // set by EngineLoop::submit
};

}  // namespace kvserve
