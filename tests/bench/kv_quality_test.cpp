// bench/kv_quality.h without a model: --configs parsing, its block-size defaults and errors.
#include "bench/kv_quality.h"

#include <gtest/gtest.h>

#include <string>
#include <variant>

namespace kvserve::bench {
namespace {

TEST(BenchKvQualityConfig, TypesPoliciesAndBlockSizes) {
  auto c = parse_quality_config("k=q8:v=q4:window=8:sink=2", 0);
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->k, KvType::kQ8);
  EXPECT_EQ(c->v, KvType::kQ4);
  const auto* w = std::get_if<WindowKv>(&c->policy);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->window, 8);
  EXPECT_EQ(w->sink, 2);
  // q4 on either side: blocks of 32 (default_block_size), else 16; --block-size, then block=B,
  // override that.
  EXPECT_EQ(c->block_size, 32);
  EXPECT_EQ(parse_quality_config("q8", 0)->block_size, 16);
  EXPECT_EQ(parse_quality_config("q4", 0)->block_size,
            default_block_size(KvType::kQ4, KvType::kQ4));
  EXPECT_EQ(parse_quality_config("q4", 8)->block_size, 8);
  EXPECT_EQ(parse_quality_config("q4:block=64", 8)->block_size, 64);
  auto h = parse_quality_config("h2o=12", 0);
  ASSERT_TRUE(h);
  const auto* hh = std::get_if<HeavyHitterKv>(&h->policy);
  ASSERT_NE(hh, nullptr);
  EXPECT_EQ(hh->keep, 12);
  EXPECT_EQ(hh->recent, 3);  // keep / 4
}

TEST(BenchKvQualityConfig, Errors) {
  struct Case {
    const char* spec;
    const char* expect;
  };
  for (const Case& t :
       {Case{"q7", "unknown KV type 'q7'"}, Case{"f16:f16", "two KV types"},
        Case{"k=f16:k=q8", "two k types"}, Case{"sink=4", "sink needs a window"},
        Case{"recent=2", "recent needs h2o"}, Case{"h2o=8:window=8", "cannot be combined"},
        Case{"window=4:window=5", "'window' twice"},
        Case{"f16:color=red", "unknown setting 'color'"}, Case{"window=x", "needs a number >= 0"},
        Case{"f16::q8", "empty setting"}, Case{"", "empty config"}}) {
    auto c = parse_quality_config(t.spec, 0);
    ASSERT_FALSE(c) << t.spec;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << t.spec;
    EXPECT_NE(c.status().message().find(t.expect), std::string::npos)
        << t.spec << ": " << c.status().message();
    EXPECT_EQ(c.status().message().rfind("--configs", 0), 0u) << c.status().message();
  }
}

TEST(BenchKvQualityConfig, DefaultListParses) {
  const std::string list = default_quality_configs(16);
  EXPECT_EQ(list, "f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=16,sink=4:window=12,h2o=16");
  size_t start = 0;
  int n = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    EXPECT_TRUE(parse_quality_config(list.substr(start, end - start), 0))
        << list.substr(start, end - start);
    ++n;
    start = end + 1;
  }
  EXPECT_EQ(n, 10);
}

}  // namespace
}  // namespace kvserve::bench
