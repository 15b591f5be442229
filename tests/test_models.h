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

// The path of a synth model of `preset` with weights of type t from `seed`, written once per
// test process into a temporary directory.
inline std::string synth_model_path(const std::string& preset, DType t, uint64_t seed = 0) {
  static TempDir dir;
  // The file is named after the preset (servers report it as the model id); type and seed pick
  // the subdirectory.
  const std::string sub = dir.file(std::string(dtype_name(t)) + "-s" + std::to_string(seed));
  std::filesystem::create_directories(sub);
  const std::string path = sub + "/" + preset + ".gguf";
  if (!std::filesystem::exists(path)) {
    SynthOptions so;
    so.preset = preset;
    so.dtype = t;
    so.out_path = path;
    so.seed = seed;
    Status st = write_synth_model(so);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
  }
  return path;
}

// The synth "demo" preset (64-dim, 2 layers, GQA) with weights of type t from `seed`.
inline const Model* synth_demo_model(DType t = DType::kF32, uint64_t seed = 7) {
  return load_model_once(synth_model_path("demo", t, seed));
}

}  // namespace kvserve::test
