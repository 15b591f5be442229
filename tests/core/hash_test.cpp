#include "core/hash.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <string>

namespace kvserve {
namespace {

std::string sha(const std::string& s) {
  return hash_bytes(HashKind::kSha256, s.data(), s.size()).hex();
}

TEST(Sha256, FipsVectors) {
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, StreamingEqualsOneShotAcrossBlockBoundaries) {
  std::string msg(1000, 'a');
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>('a' + i % 26);
  const Digest one = hash_bytes(HashKind::kSha256, msg.data(), msg.size());
  for (size_t step : {1, 7, 63, 64, 65, 333}) {
    HashStream s(HashKind::kSha256);
    for (size_t i = 0; i < msg.size(); i += step)
      s.update(msg.data() + i, std::min(step, msg.size() - i));
    EXPECT_EQ(s.finish(), one) << step;
  }
  // One million 'a': the long FIPS vector.
  HashStream s(HashKind::kSha256);
  const std::string a(1000, 'a');
  for (int i = 0; i < 1000; ++i) s.update(a.data(), a.size());
  EXPECT_EQ(s.finish().hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Xxh3, MatchesLibraryAndFillsHalfTheDigest) {
  const std::string msg = "kvserve prefix cache";
  HashStream s(HashKind::kXxh3_128);
  s.update(msg.data(), 5);
  s.update(msg.data() + 5, msg.size() - 5);
  const Digest d = s.finish();
  const XXH128_hash_t ref = XXH3_128bits(msg.data(), msg.size());
  EXPECT_EQ(d.word(0) != 0 || d.word(1) != 0, true);
  EXPECT_EQ(d.word(2), 0u);
  EXPECT_EQ(d.word(3), 0u);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, ref);
  EXPECT_EQ(0, std::memcmp(d.bytes.data(), c.digest, 16));
  EXPECT_EQ(d.short_hex().size(), 8u);
}

TEST(Hash, KindNames) {
  EXPECT_EQ(hash_kind_from_name("xxh3"), HashKind::kXxh3_128);
  EXPECT_EQ(hash_kind_from_name("sha256"), HashKind::kSha256);
  EXPECT_FALSE(hash_kind_from_name("md5").has_value());
  EXPECT_STREQ(hash_kind_name(HashKind::kSha256), "sha256");
}

TEST(Hash, LengthPrefixedStringsAreUnambiguous) {
  HashStream a(HashKind::kXxh3_128), b(HashKind::kXxh3_128);
  a.update_string("ab");
  a.update_string("c");
  b.update_string("a");
  b.update_string("bc");
  EXPECT_NE(a.finish(), b.finish());
}

}  // namespace
}  // namespace kvserve
