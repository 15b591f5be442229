// Hashing for content keys: xxh3-128 (fast, the default) and SHA-256 (cryptographic), behind one
// streaming interface. A Digest always holds 32 bytes; xxh3-128 fills the first 16 and leaves
// the rest zero, so digests of either kind compare and hash the same way.
// Thread-compatible: one HashStream per thread; the free functions are pure.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace kvserve {

enum class HashKind { kXxh3_128, kSha256 };

const char* hash_kind_name(HashKind k);  // "xxh3", "sha256"
std::optional<HashKind> hash_kind_from_name(std::string_view name);

struct Digest {
  std::array<uint8_t, 32> bytes{};

  bool operator==(const Digest&) const = default;
  std::string hex() const;        // 64 hex digits
  std::string short_hex() const;  // first 8 hex digits, for dumps
  uint64_t word(int i) const;     // bytes [8i, 8i + 8) little-endian, i in [0, 4)
};

struct DigestHasher {  // for unordered containers
  size_t operator()(const Digest& d) const { return static_cast<size_t>(d.word(0) ^ d.word(1)); }
};

// Streaming hash of one kind: update() any number of times, then finish() once.
class HashStream {
 public:
  explicit HashStream(HashKind kind);
  ~HashStream();
  HashStream(const HashStream&) = delete;
  HashStream& operator=(const HashStream&) = delete;

  HashKind kind() const { return kind_; }
  void update(const void* data, size_t n);
  void update_u64(uint64_t v);             // 8 bytes, little-endian
  void update_string(std::string_view s);  // length-prefixed, so concatenations stay unambiguous
  void update_digest(const Digest& d) { update(d.bytes.data(), d.bytes.size()); }
  Digest finish();

 private:
  struct Impl;
  HashKind kind_;
  std::unique_ptr<Impl> impl_;
};

Digest hash_bytes(HashKind kind, const void* data, size_t n);

}  // namespace kvserve
