#include "model/tokenizer_bpe.h"

#include <array>
#include <queue>

#include "core/utf8.h"
#include "model/tokenizer_spm.h"

namespace kvserve {

// ---------------------------------------------------------------------------------------------
// Byte alphabet

namespace {

struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> to_byte{};  // indexed by code point (all mapped code points < 324)
  std::array<std::string, 256> utf8;

  ByteAlphabet() {
    to_byte.fill(-1);
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      to_cp[b] = printable ? static_cast<uint32_t>(b) : 256 + extra++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
      utf8_append(utf8[b], to_cp[b]);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

}  // namespace

uint32_t bpe_byte_to_codepoint(uint8_t b) {
  return alphabet().to_cp[b];
}

int bpe_codepoint_to_byte(uint32_t cp) {
  return cp < alphabet().to_byte.size() ? alphabet().to_byte[cp] : -1;
}

std::string bpe_bytes_to_symbols(std::string_view bytes) {
  const ByteAlphabet& a = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += a.utf8[static_cast<uint8_t>(c)];
  return out;
}

std::string bpe_symbols_to_bytes(std::string_view symbols) {
  std::string out;
  out.reserve(symbols.size());
  for (size_t pos = 0; pos < symbols.size();) {
    const Utf8Char c = utf8_next(symbols, pos);
    const int b = c.valid ? bpe_codepoint_to_byte(c.cp) : -1;
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(symbols.substr(pos, c.len));
    }
    pos += c.len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: a hand-written matcher for the GPT-2 / Llama 3 split regexes.

namespace {

enum Cat : uint8_t { kOther, kLetter, kNumber, kSpace };

struct Ch {
  uint32_t cp;   // sentinel kNoCp for bytes that are not valid UTF-8
  uint32_t off;  // byte offset in the text
  uint8_t cat;
};

constexpr uint32_t kNoCp = 0xFFFFFFFFu;

struct Rules {
  bool case_insensitive = false;   // (?i:'s|'t|...)
  bool any_letter_prefix = false;  // [^\r\n\p{L}\p{N}]?\p{L}+ instead of ' ?\p{L}+'
  size_t digit_max = 0;            // 0: unlimited
  bool digit_space = true;         // ' ?\p{N}+'
  bool punct_newlines = false;     // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  bool ws_newline = false;         // '\s*[\r\n]+'
};

// Length in characters of the match at c[i] (i < end); the characters from `end` on do not exist
// for this match (the regex runs on [begin, end) alone).
size_t match_one(const std::vector<Ch>& c, size_t i, size_t end, const Rules& r) {
  auto cat = [&](size_t k) -> int { return k < end ? c[k].cat : -1; };
  auto cp = [&](size_t k) -> uint32_t { return k < end ? c[k].cp : kNoCp; };
  auto crlf = [&](size_t k) { return cp(k) == '\r' || cp(k) == '\n'; };
  auto run = [&](size_t k, int want) {
    while (k < end && c[k].cat == want) ++k;
    return k;
  };

  // Contractions.
  if (cp(i) == '\'') {
    auto low = [&](uint32_t x) { return r.case_insensitive && x >= 'A' && x <= 'Z' ? x + 32 : x; };
    const uint32_t a = low(cp(i + 1));
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    const uint32_t b = low(cp(i + 2));
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  // Letters with an optional prefix.
  if (cat(i) == kLetter) return run(i, kLetter) - i;
  if (cat(i + 1) == kLetter) {
    const bool prefix_ok = r.any_letter_prefix ? (cat(i) != kNumber && !crlf(i)) : cp(i) == ' ';
    if (prefix_ok) return run(i + 1, kLetter) - i;
  }
  // Numbers.
  {
    const size_t d0 = (r.digit_space && cp(i) == ' ' && cat(i + 1) == kNumber) ? i + 1 : i;
    if (cat(d0) == kNumber) {
      size_t k = d0;
      while (k < end && c[k].cat == kNumber && (r.digit_max == 0 || k - d0 < r.digit_max)) ++k;
      return k - i;
    }
  }
  // Other symbols with an optional leading space.
  {
    const size_t p0 = (cp(i) == ' ' && cat(i + 1) == kOther) ? i + 1 : i;
    if (cat(p0) == kOther) {
      size_t k = run(p0, kOther);
      if (r.punct_newlines) {
        while (crlf(k)) ++k;
      }
      return k - i;
    }
  }
  // Whitespace.
  if (cat(i) == kSpace) {
    const size_t j = run(i, kSpace);
    if (r.ws_newline) {  // \s*[\r\n]+ : up to the last CR/LF of the run
      for (size_t k = j; k > i; --k) {
        if (crlf(k - 1)) return k - i;
      }
    }
    if (j >= end || j - i == 1) return j - i;  // \s+(?!\S) at the end, or \s+ of one char
    return j - i - 1;                          // \s+(?!\S): leave the last one for the next word
  }
  return 1;
}

void scan(const std::vector<Ch>& c, size_t begin, size_t end, const Rules& r,
          std::vector<std::pair<size_t, size_t>>& spans) {
  for (size_t i = begin; i < end;) {
    const size_t n = match_one(c, i, end, r);
    spans.emplace_back(i, i + n);
    i += n;
  }
}

}  // namespace

BpePreTokenizer bpe_pre_tokenizer_from_name(std::string_view name) {
  static constexpr std::string_view kLlama3[] = {"llama3",    "llama-v3", "llama-bpe", "dbrx",
                                                 "smaug-bpe", "falcon3",  "pixtral"};
  static constexpr std::string_view kQwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"};
  static constexpr std::string_view kSplitDigits[] = {"smollm", "starcoder", "refact", "codeshell"};
  for (auto n : kLlama3) {
    if (name == n) return BpePreTokenizer::kLlama3;
  }
  for (auto n : kQwen2) {
    if (name == n) return BpePreTokenizer::kQwen2;
  }
  for (auto n : kSplitDigits) {
    if (name == n) return BpePreTokenizer::kGpt2SplitDigits;
  }
  return BpePreTokenizer::kGpt2;
}

std::vector<std::string_view> bpe_pretokenize(std::string_view text, BpePreTokenizer pre) {
  std::vector<Ch> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char u = utf8_next(text, pos);
    Ch ch{u.valid ? u.cp : kNoCp, static_cast<uint32_t>(pos), kOther};
    if (u.valid) {
      if (unicode_is_letter(u.cp)) {
        ch.cat = kLetter;
      } else if (unicode_is_number(u.cp)) {
        ch.cat = kNumber;
      } else if (unicode_is_space(u.cp)) {
        ch.cat = kSpace;
      }
    }
    chars.push_back(ch);
    pos += u.len;
  }

  Rules rules;
  if (pre == BpePreTokenizer::kLlama3 || pre == BpePreTokenizer::kQwen2) {
    rules.case_insensitive = true;
    rules.any_letter_prefix = true;
    rules.digit_max = pre == BpePreTokenizer::kLlama3 ? 3 : 1;
    rules.digit_space = false;
    rules.punct_newlines = true;
    rules.ws_newline = true;
  }

  std::vector<std::pair<size_t, size_t>> spans;
  if (pre == BpePreTokenizer::kGpt2SplitDigits) {
    for (size_t i = 0; i < chars.size();) {
      if (chars[i].cat == kNumber) {
        spans.emplace_back(i, i + 1);
        ++i;
        continue;
      }
      size_t j = i;
      while (j < chars.size() && chars[j].cat != kNumber) ++j;
      scan(chars, i, j, rules, spans);
      i = j;
    }
  } else {
    scan(chars, 0, chars.size(), rules, spans);
  }

  std::vector<std::string_view> out;
  out.reserve(spans.size());
  for (const auto& [b, e] : spans) {
    const size_t off = chars[b].off;
    const size_t stop = e < chars.size() ? chars[e].off : text.size();
    out.push_back(text.substr(off, stop - off));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// BpeTokenizer

BpeTokenizer::BpeTokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                           std::vector<int32_t> types, BpeOptions opts)
    : tokens_(std::move(tokens)),
      types_(std::move(types)),
      pre_(bpe_pre_tokenizer_from_name(opts.pre)) {
  const auto n = static_cast<int32_t>(tokens_.size());
  auto in_range = [n](int32_t id) { return id >= 0 && id < n ? id : -1; };
  bos_ = in_range(opts.bos);
  eos_ = in_range(opts.eos);
  unk_ = in_range(opts.unk);
  add_bos_ = opts.add_bos;
  ignore_merges_ = pre_ == BpePreTokenizer::kLlama3;
  types_.resize(tokens_.size(), token_type::kNormal);
  matchable_.reserve(tokens_.size());
  for (int32_t i = 0; i < n; ++i) {
    const int32_t t = types_[i];
    if (t != 0 && t != token_type::kNormal && t != token_type::kByte) continue;
    if (tokens_[i].empty()) continue;
    matchable_.emplace(std::string_view(tokens_[i]), i);  // on duplicates the lowest id wins
  }
  ranks_.reserve(merges.size());
  std::string key;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size()) continue;
    key.assign(m, 0, sp);
    key.push_back('\0');
    key.append(m, sp + 1);
    ranks_.emplace(key, static_cast<int32_t>(i));
  }
}

std::string_view BpeTokenizer::piece(int32_t token) const {
  if (token < 0 || token >= n_vocab()) return {};
  return tokens_[token];
}

int32_t BpeTokenizer::token_type(int32_t token) const {
  if (token < 0 || token >= n_vocab()) return 0;
  return types_[token];
}

int32_t BpeTokenizer::find_token(std::string_view text) const {
  auto it = matchable_.find(text);
  return it == matchable_.end() ? -1 : it->second;
}

int32_t BpeTokenizer::merge_rank(std::string_view left, std::string_view right) const {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left);
  key.push_back('\0');
  key.append(right);
  auto it = ranks_.find(key);
  return it == ranks_.end() ? -1 : it->second;
}

namespace {

struct Sym {
  uint32_t start = 0, len = 0;  // span of the mapped word; len 0: merged away
  int32_t prev = -1, next = -1;
};

struct Pair {
  int32_t rank;
  int32_t left, right;
  uint32_t len;
};

struct PairOrder {
  bool operator()(const Pair& a, const Pair& b) const {
    if (a.rank != b.rank) return a.rank > b.rank;  // lowest rank first
    return a.left > b.left;                        // then leftmost
  }
};

}  // namespace

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  const ByteAlphabet& a = alphabet();
  const std::string mapped = bpe_bytes_to_symbols(word);
  if (ignore_merges_) {
    const int32_t id = find_token(mapped);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<Sym> syms;
  syms.reserve(word.size());
  uint32_t pos = 0;
  for (char c : word) {
    Sym s;
    s.start = pos;
    s.len = static_cast<uint32_t>(a.utf8[static_cast<uint8_t>(c)].size());
    s.prev = static_cast<int32_t>(syms.size()) - 1;
    s.next = static_cast<int32_t>(syms.size()) + 1;
    syms.push_back(s);
    pos += s.len;
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  std::priority_queue<Pair, std::vector<Pair>, PairOrder> queue;
  std::string key;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Sym& l = syms[left];
    const Sym& r = syms[right];
    key.assign(mapped, l.start, l.len);
    key.push_back('\0');
    key.append(mapped, r.start, r.len);
    auto it = ranks_.find(key);
    if (it == ranks_.end()) return;
    queue.push(Pair{it->second, left, right, l.len + r.len});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) try_add(i, i + 1);

  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Sym& l = syms[p.left];
    if (l.len == 0 || l.next != p.right) continue;
    Sym& r = syms[p.right];
    if (l.len + r.len != p.len) continue;
    l.len = p.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    r.len = 0;
    try_add(l.prev, p.left);
    try_add(p.left, l.next);
  }

  const std::string_view m(mapped);
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const std::string_view text = m.substr(syms[i].start, syms[i].len);
    const int32_t id = find_token(text);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (size_t k = 0; k < text.size();) {  // fall back to one token per character
      const Utf8Char u = utf8_next(text, k);
      const int32_t cid = find_token(text.substr(k, u.len));
      if (cid >= 0) {
        out.push_back(cid);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
      k += u.len;
    }
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  for (std::string_view word : bpe_pretokenize(text, pre_)) encode_word(word, out);
  return out;
}

std::string BpeTokenizer::decode_token(int32_t /*prev*/, int32_t token) const {
  if (token < 0 || token >= n_vocab()) return {};
  const std::string& p = tokens_[token];
  switch (types_[token]) {
    case token_type::kUserDefined:
      return p;
    case token_type::kByte: {
      uint8_t b = 0;
      if (parse_byte_piece(p, &b)) return std::string(1, static_cast<char>(b));
      return bpe_symbols_to_bytes(p);
    }
    case token_type::kNormal:
    case 0:
      return bpe_symbols_to_bytes(p);
    default:
      return {};  // control, unknown, unused
  }
}

}  // namespace kvserve
