// Shared test helpers: where the shared models live, skipping when they are absent, temp dirs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#ifndef KVSERVE_SHARED_MODELS
#define KVSERVE_SHARED_MODELS "../shared/models"
#endif

namespace kvserve::test {

// The folder holding the shared test models (../shared/models beside the repository).
inline std::string shared_models_dir() {
  return KVSERVE_SHARED_MODELS;
}

// A path inside shared_models_dir(), e.g. shared_model_path("stories260K/stories260K.gguf").
inline std::string shared_model_path(const std::string& rel) {
  return shared_models_dir() + "/" + rel;
}

}  // namespace kvserve::test

// Skips the current test when the shared models folder is absent.
#define KV_REQUIRE_SHARED_MODELS()                                 \
  do {                                                             \
    const std::string _dir = ::kvserve::test::shared_models_dir(); \
    if (!std::filesystem::is_directory(_dir)) {                    \
      GTEST_SKIP() << "../shared/models not found: " << _dir;      \
    }                                                              \
  } while (0)

// Skips the current test when one shared model file is absent.
#define KV_REQUIRE_SHARED_FILE(path)                            \
  do {                                                          \
    KV_REQUIRE_SHARED_MODELS();                                 \
    if (!std::filesystem::is_regular_file(path)) {              \
      GTEST_SKIP() << "../shared/models not found: " << (path); \
    }                                                           \
  } while (0)

namespace kvserve::test {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kvserve_test_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    }
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace kvserve::test
