// Models shared by the engine tests: each file is loaded once per test process (tests only read
// models), and synth "demo" models are written once into a temporary directory.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "model/model.h"
#include "model/synth.h"
#include "test_util.h"

namespace kvserve::test {

// The loaded model at path, or nullptr (with a test failure) when it does not load.
inline const Model* load_model_once(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Model>> models;
  auto it = models.find(path);
  if (it != models.end()) return it->second.get();
  auto m = load_model(path);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  if (!m) return nullptr;
  return (models[path] = std::move(*m)).get();
}

// The synth "demo" preset (64-dim, 2 layers, GQA) with weights of type t from `seed`.
inline const Model* synth_demo_model(DType t = DType::kF32, uint64_t seed = 7) {
  static TempDir dir;
  const std::string path =
      dir.file(std::string("demo-") + dtype_name(t) + "-s" + std::to_string(seed) + ".gguf");
  if (!std::filesystem::exists(path)) {
    SynthOptions so;
    so.preset = "demo";
    so.dtype = t;
    so.out_path = path;
    so.seed = seed;
    Status st = write_synth_model(so);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
  }
  return load_model_once(path);
}

}  // namespace kvserve::test
