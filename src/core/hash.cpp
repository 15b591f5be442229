#include "core/hash.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "core/assert.h"

namespace kvserve {

namespace {

// SHA-256 (FIPS 180-4), written from the specification.
class Sha256 {
 public:
  void update(const uint8_t* p, size_t n) {
    n_bytes_ += n;
    while (n > 0) {
      const size_t take = std::min(n, sizeof(buf_) - n_buf_);
      std::memcpy(buf_ + n_buf_, p, take);
      n_buf_ += take;
      p += take;
      n -= take;
      if (n_buf_ == sizeof(buf_)) {
        compress(buf_);
        n_buf_ = 0;
      }
    }
  }

  Digest finish() {
    const uint64_t n_bits = n_bytes_ * 8;
    const uint8_t one = 0x80;
    update(&one, 1);
    const uint8_t zero = 0;
    while (n_buf_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n_bits >> (56 - 8 * i));
    update(len, 8);
    KV_ASSERT(n_buf_ == 0);
    Digest d;
    for (int i = 0; i < 8; ++i) {
      for (int b = 0; b < 4; ++b) d.bytes[4 * i + b] = static_cast<uint8_t>(h_[i] >> (24 - 8 * b));
    }
    return d;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress(const uint8_t* block) {
    static constexpr uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(block[4 * i]) << 24) | (uint32_t(block[4 * i + 1]) << 16) |
             (uint32_t(block[4 * i + 2]) << 8) | uint32_t(block[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const uint32_t ch = (e & f) ^ (~e & g);
      const uint32_t t1 = h + s1 + ch + k[i] + w[i];
      const uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const uint32_t t2 = s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d;
    h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }

  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64];
  size_t n_buf_ = 0;
  uint64_t n_bytes_ = 0;
};

}  // namespace

const char* hash_kind_name(HashKind k) {
  return k == HashKind::kSha256 ? "sha256" : "xxh3";
}

std::optional<HashKind> hash_kind_from_name(std::string_view name) {
  if (name == "xxh3" || name == "xxh3-128") return HashKind::kXxh3_128;
  if (name == "sha256" || name == "sha-256") return HashKind::kSha256;
  return std::nullopt;
}

std::string Digest::hex() const {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) {
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

std::string Digest::short_hex() const {
  return hex().substr(0, 8);
}

uint64_t Digest::word(int i) const {
  KV_ASSERT(i >= 0 && i < 4);
  uint64_t v = 0;
  for (int b = 7; b >= 0; --b) v = (v << 8) | bytes[8 * i + b];
  return v;
}

struct HashStream::Impl {
  XXH3_state_t* xxh = nullptr;
  Sha256 sha;
  ~Impl() {
    if (xxh) XXH3_freeState(xxh);
  }
};

HashStream::HashStream(HashKind kind) : kind_(kind), impl_(std::make_unique<Impl>()) {
  if (kind_ == HashKind::kXxh3_128) {
    impl_->xxh = XXH3_createState();
    KV_ASSERT(impl_->xxh != nullptr);
    XXH3_128bits_reset(impl_->xxh);
  }
}

HashStream::~HashStream() = default;

void HashStream::update(const void* data, size_t n) {
  if (kind_ == HashKind::kXxh3_128) {
    XXH3_128bits_update(impl_->xxh, data, n);
  } else {
    impl_->sha.update(static_cast<const uint8_t*>(data), n);
  }
}

void HashStream::update_u64(uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  update(b, 8);
}

void HashStream::update_string(std::string_view s) {
  update_u64(s.size());
  update(s.data(), s.size());
}

Digest HashStream::finish() {
  if (kind_ == HashKind::kSha256) return impl_->sha.finish();
  const XXH128_hash_t h = XXH3_128bits_digest(impl_->xxh);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  Digest d;
  std::memcpy(d.bytes.data(), c.digest, sizeof(c.digest));
  return d;
}

Digest hash_bytes(HashKind kind, const void* data, size_t n) {
  HashStream s(kind);
  s.update(data, n);
  return s.finish();
}

}  // namespace kvserve
