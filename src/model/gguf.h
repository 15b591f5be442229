// GGUF v2/v3 reader (memory-mapped, bounds-checked) and writer.
// Format: https://github.com/ggerganov/ggml/blob/master/docs/gguf.md (see docs/formats.md).
// The reader never trusts a count or an offset: every length is checked against the bytes left
// in the file before anything is allocated, so a corrupt file gives a Status, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/tensor.h"

namespace kvserve {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars live in the matching field; arrays hold their elements in the
// vector matching elem_type's family (integers in `ints`, floats in `floats`, strings in `strs`,
// bools in `ints` as 0/1). Nested arrays are rejected as unsupported.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  GgufType elem_type = GgufType::kUint32;  // arrays only
  int64_t i = 0;       // all integer types (uint64 values above INT64_MAX are stored modulo 2^64)
  double f = 0;        // float32 / float64
  bool b = false;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strs;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
  bool is_array() const { return type == GgufType::kArray; }
  size_t array_size() const;
};

class GgufFile {
 public:
  // Maps and parses the file. Tensor data offsets and sizes are validated against the file size.
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }

  const GgufValue* find(std::string_view key) const;
  // Typed getters: not_found when missing, invalid_argument when the type does not fit;
  // messages name the file and the key.
  Result<int64_t> get_int(std::string_view key) const;
  Result<double> get_float(std::string_view key) const;  // accepts integer values too
  Result<std::string> get_string(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return kv_; }

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* tensor(std::string_view name) const;  // nullptr if absent

 private:
  GgufFile() = default;
  friend class GgufParser;
  std::string path_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> kv_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
};

// Builds a GGUF v3 file in memory and writes it. Used by `kvserve synth` and by tests that craft
// (or corrupt) files.
class GgufWriter {
 public:
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_string_array(const std::string& key, const std::vector<std::string>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  // Any value the reader can return (every scalar type, arrays of scalars or strings).
  void set_value(const std::string& key, GgufValue v);
  // dims[0] is the innermost dimension; data holds row_bytes(type, dims[0]) * rows bytes.
  void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& dims,
                  std::vector<uint8_t> data);
  void set_alignment(uint32_t a);  // also written as general.alignment

  // Streaming (for models too large to hold in memory): declare a tensor whose bytes are produced
  // only at write time, by the callback given to write_streaming, one tensor at a time.
  void add_tensor_deferred(const std::string& name, DType type, const std::vector<int64_t>& dims);
  // sink(data, n) appends bytes of the current tensor; produce(i, sink) must emit exactly the
  // bytes of the i-th tensor (in add order; tensors added with add_tensor are written directly).
  using ByteSink = std::function<Status(const void* data, size_t n)>;
  using TensorProducer = std::function<Status(size_t index, const ByteSink& sink)>;
  Status write_streaming(const std::string& path, const TensorProducer& produce) const;

  std::vector<uint8_t> serialize() const;
  Status write(const std::string& path) const;

 private:
  struct Entry {
    std::string key;
    GgufValue value;
  };
  struct Tensor {
    std::string name;
    DType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
    bool deferred = false;  // bytes come from write_streaming's producer
  };
  std::vector<uint8_t> serialize_header(std::vector<uint64_t>* offsets) const;
  static size_t tensor_bytes(const Tensor& t);
  std::vector<Entry> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace kvserve
