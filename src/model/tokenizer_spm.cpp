#include "model/tokenizer_spm.h"

#include <queue>

namespace kvserve {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_matchable_type(int32_t type) {
  return type == 0 || type == token_type::kNormal;
}

}  // namespace

bool parse_byte_piece(std::string_view piece, uint8_t* byte) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return false;
  const int hi = hex_value(piece[3]), lo = hex_value(piece[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = static_cast<uint8_t>(hi * 16 + lo);
  return true;
}

SpmTokenizer::SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores,
                           std::vector<int32_t> types, SpmOptions opts)
    : pieces_(std::move(pieces)),
      scores_(std::move(scores)),
      types_(std::move(types)),
      add_space_prefix_(opts.add_space_prefix),
      space_(opts.space_symbol.empty() ? std::string(" ") : std::move(opts.space_symbol)),
      kind_(opts.kind ? opts.kind : "llama") {
  const auto n = static_cast<int32_t>(pieces_.size());
  auto in_range = [n](int32_t id) { return id >= 0 && id < n ? id : -1; };
  bos_ = in_range(opts.bos);
  eos_ = in_range(opts.eos);
  unk_ = in_range(opts.unk);
  add_bos_ = opts.add_bos;
  scores_.resize(pieces_.size(), 0.0f);
  types_.resize(pieces_.size(), token_type::kNormal);
  byte_tokens_.fill(-1);
  matchable_.reserve(pieces_.size());
  for (int32_t i = 0; i < n; ++i) {
    const std::string& p = pieces_[i];
    uint8_t b = 0;
    if (parse_byte_piece(p, &b) &&
        (is_matchable_type(types_[i]) || types_[i] == token_type::kByte)) {
      types_[i] = token_type::kByte;
      if (byte_tokens_[b] < 0) byte_tokens_[b] = i;
      continue;
    }
    if (!is_matchable_type(types_[i]) || p.empty()) continue;
    matchable_.emplace(std::string_view(p), i);  // on duplicates the lowest id wins
    if (p.size() > max_piece_len_) max_piece_len_ = p.size();
  }
}

std::string_view SpmTokenizer::piece(int32_t token) const {
  if (token < 0 || token >= n_vocab()) return {};
  return pieces_[token];
}

int32_t SpmTokenizer::token_type(int32_t token) const {
  if (token < 0 || token >= n_vocab()) return 0;
  return types_[token];
}

float SpmTokenizer::score(int32_t token) const {
  if (token < 0 || token >= n_vocab()) return 0.0f;
  return scores_[token];
}

int32_t SpmTokenizer::find_piece(std::string_view piece) const {
  auto it = matchable_.find(piece);
  return it == matchable_.end() ? -1 : it->second;
}

namespace {

struct Bigram {
  float score;
  int32_t left, right;
  uint32_t len;  // combined length when queued; a mismatch later means the entry is stale
  int32_t id;
};

struct BigramOrder {
  // Highest score first; on ties the leftmost pair (symbols keep their left-to-right index order).
  bool operator()(const Bigram& a, const Bigram& b) const {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  }
};

}  // namespace

struct SpmTokenizer::Symbol {
  uint32_t start = 0, len = 0;  // span of the normalized text; len 0: merged away
  int32_t prev = -1, next = -1;
  int32_t id = -1;
  bool fixed = false;  // byte fallback / unk: never merged
};

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  if (text.empty()) return out;

  const std::string norm = normalize(text);
  std::vector<Symbol> syms = split_chars(norm);
  merge_symbols(norm, syms);
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) out.push_back(syms[i].id);
  }
  return out;
}

std::string SpmTokenizer::normalize(std::string_view text) const {
  std::string norm;
  norm.reserve(text.size() + (text.size() / 4 + 1) * (space_.size() - 1) + space_.size());
  if (add_space_prefix_) norm += space_;
  for (char c : text) {
    if (c == ' ') {
      norm += space_;
    } else {
      norm.push_back(c);
    }
  }
  return norm;
}

std::vector<SpmTokenizer::Symbol> SpmTokenizer::split_chars(const std::string& norm) const {
  // Split into characters the way run.c does: a byte starts a character, and up to three
  // following continuation bytes (10xxxxxx) extend it.
  std::vector<Symbol> syms;
  syms.reserve(norm.size());
  auto push = [&syms](uint32_t start, uint32_t len, int32_t id, bool fixed) {
    Symbol s;
    s.start = start;
    s.len = len;
    s.id = id;
    s.fixed = fixed;
    s.prev = static_cast<int32_t>(syms.size()) - 1;
    s.next = static_cast<int32_t>(syms.size()) + 1;
    syms.push_back(s);
  };
  for (size_t pos = 0; pos < norm.size();) {
    size_t len = 1;
    while (pos + len < norm.size() && len < 4 &&
           (static_cast<uint8_t>(norm[pos + len]) & 0xC0) == 0x80) {
      ++len;
    }
    const int32_t id = find_piece(std::string_view(norm).substr(pos, len));
    if (id >= 0) {
      push(static_cast<uint32_t>(pos), static_cast<uint32_t>(len), id, false);
    } else {
      for (size_t k = 0; k < len; ++k) {
        const int32_t b = byte_tokens_[static_cast<uint8_t>(norm[pos + k])];
        push(static_cast<uint32_t>(pos + k), 1, b >= 0 ? b : unk_, true);
      }
    }
    pos += len;
  }
  syms.back().next = -1;
  return syms;
}

void SpmTokenizer::merge_symbols(const std::string& norm, std::vector<Symbol>& syms) const {
  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = syms[left];
    const Symbol& r = syms[right];
    if (l.fixed || r.fixed) return;
    const uint32_t len = l.len + r.len;
    if (len > max_piece_len_) return;
    const int32_t id = find_piece(std::string_view(norm).substr(l.start, len));
    if (id < 0) return;
    queue.push(Bigram{scores_[id], left, right, len, id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) try_add(i, i + 1);

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Symbol& l = syms[bg.left];
    if (l.len == 0 || l.next != bg.right) continue;
    Symbol& r = syms[bg.right];
    if (l.len + r.len != bg.len) continue;
    l.len = bg.len;
    l.id = bg.id;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = bg.left;
    r.len = 0;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }
}

std::string SpmTokenizer::decode_token(int32_t prev, int32_t token) const {
  if (token < 0 || token >= n_vocab()) return {};
  const std::string& p = pieces_[token];
  switch (types_[token]) {
    case token_type::kByte: {
      uint8_t b = 0;
      if (parse_byte_piece(p, &b)) return std::string(1, static_cast<char>(b));
      return p;
    }
    case token_type::kUserDefined:
      return p;
    case token_type::kNormal:
    case 0:
      break;
    default:
      return {};  // control, unknown, unused
  }
  std::string s;
  if (space_ == " ") {
    s = p;
  } else {
    s.reserve(p.size());
    for (size_t pos = 0; pos < p.size();) {
      if (p.compare(pos, space_.size(), space_) == 0) {
        s.push_back(' ');
        pos += space_.size();
      } else {
        s.push_back(p[pos++]);
      }
    }
  }
  if (add_space_prefix_ && prev >= 0 && prev == bos_ && !s.empty() && s[0] == ' ') s.erase(0, 1);
  return s;
}

}  // namespace kvserve
