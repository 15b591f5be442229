// EngineLoop's commands: work posted from other threads runs on the engine thread, between
// steps, in order, with its result returned, also while the server drains.
#include "engine/engine_loop.h"

#include <gtest/gtest.h>

#include <thread>

#include "test_models.h"

namespace kvserve {
namespace {

std::unique_ptr<EngineLoop> make_loop() {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  EXPECT_NE(m, nullptr);
  EngineLoopOptions o;
  o.engine.n_ctx = 128;
  o.engine.kv_type_k = o.engine.kv_type_v = KvType::kF32;
  o.engine.n_threads = 2;
  auto loop = EngineLoop::create(*m, o);
  EXPECT_TRUE(loop.is_ok()) << loop.status().to_string();
  return std::move(*loop);
}

TEST(EngineLoop, CommandsRunOnTheEngineThreadInOrder) {
  auto loop = make_loop();
  std::vector<int> order;  // written only by the engine thread
  auto a = loop->post([&](EngineCore&) {
    order.push_back(1);
    return std::this_thread::get_id();
  });
  auto b = loop->post([&](EngineCore& core) {
    order.push_back(2);
    return core.kv().occupancy().total;
  });
  const std::thread::id engine_thread = a.get();
  EXPECT_NE(engine_thread, std::this_thread::get_id());
  EXPECT_EQ(b.get(), 8);  // 128 tokens of context in blocks of 16
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(EngineLoop, ACommandSeesTheRequestsSubmittedBeforeIt) {
  auto loop = make_loop();
  auto req = std::make_shared<Request>();
  SeqSpec s;
  s.prompt.assign(40, 9);
  s.max_tokens = 4;
  s.sampling.temperature = 0;
  req->seqs.push_back(s);
  ASSERT_TRUE(loop->submit(req).is_ok());
  for (int done = 0; !done;) {
    for (const SeqEvent& e : req->channel->wait(std::chrono::seconds(10))) done |= e.finished;
  }
  // The sequence's blocks are cached now; a reset on the engine thread forgets them, and the
  // snapshot it publishes says so.
  auto cached = loop->post([](EngineCore& core) {
    const int n = core.kv().occupancy().cached;
    core.reset_prefix_cache();
    return n;
  });
  EXPECT_EQ(cached.get(), 2);  // 43 tokens computed: two full blocks
  EXPECT_EQ(loop->snapshot()->tiers[0].blocks_cached, 0);
}

TEST(EngineLoop, DrainingRefusesRequestsButStillRunsCommands) {
  auto loop = make_loop();
  loop->stop_accepting();
  auto req = std::make_shared<Request>();
  SeqSpec s;
  s.prompt = {1, 2, 3};
  req->seqs.push_back(s);
  EXPECT_EQ(loop->submit(req).code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(loop->post([](EngineCore&) { return 7; }).get(), 7);  // e.g. a save before exit
}

}  // namespace
}  // namespace kvserve
