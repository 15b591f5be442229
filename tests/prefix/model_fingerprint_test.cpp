// The model fingerprint separates everything that changes a token's K/V (weights, KV layout,
// policy, hash) and nothing else: the same model and layout always give the same digest.
#include "prefix/model_fingerprint.h"

#include <gtest/gtest.h>

#include "engine/engine_options.h"
#include "test_models.h"

namespace kvserve {
namespace {

KvLayout layout_of(const Model& m, KvType k = KvType::kF16, int block_size = 16) {
  EngineOptions eo;
  eo.kv_type_k = eo.kv_type_v = k;
  eo.block_size = block_size;
  return kv_layout_for(m.config, eo);
}

TEST(ModelFingerprint, SameModelAndLayoutGiveTheSameDigest) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  const Digest a = model_fingerprint(*m, layout_of(*m), HashKind::kXxh3_128);
  EXPECT_EQ(a, model_fingerprint(*m, layout_of(*m), HashKind::kXxh3_128));
  EXPECT_NE(a, Digest{});
}

TEST(ModelFingerprint, EverythingThatChangesKvChangesTheDigest) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  const Model* other_weights = test::synth_demo_model(DType::kF32, 6);  // same shapes
  const Model* other_dtype = test::synth_demo_model(DType::kF16, 5);
  ASSERT_NE(m, nullptr);
  ASSERT_NE(other_weights, nullptr);
  ASSERT_NE(other_dtype, nullptr);
  const Digest base = model_fingerprint(*m, layout_of(*m), HashKind::kXxh3_128);
  const std::vector<Digest> others = {
      model_fingerprint(*other_weights, layout_of(*other_weights), HashKind::kXxh3_128),
      model_fingerprint(*other_dtype, layout_of(*other_dtype), HashKind::kXxh3_128),
      model_fingerprint(*m, layout_of(*m, KvType::kQ8), HashKind::kXxh3_128),
      model_fingerprint(*m, layout_of(*m, KvType::kF16, 32), HashKind::kXxh3_128),
      model_fingerprint(*m, layout_of(*m), HashKind::kSha256),
      model_fingerprint(*m, layout_of(*m), HashKind::kXxh3_128, "window(0+64)"),
  };
  for (size_t i = 0; i < others.size(); ++i) {
    EXPECT_NE(others[i], base) << i;
    for (size_t j = 0; j < i; ++j) EXPECT_NE(others[i], others[j]) << i << " " << j;
  }
}

}  // namespace
}  // namespace kvserve
