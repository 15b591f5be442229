// GGUF reader (mmap, every length checked against the bytes left before use) and writer.
#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/assert.h"

namespace kvserve {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr uint64_t kMaxAlignment = uint64_t{1} << 24;
constexpr int kMaxDims = 4;

bool is_valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::kFloat64);
}

// Bytes of one scalar of type t; 0 for string/array.
size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

bool is_float_type(GgufType t) {
  return t == GgufType::kFloat32 || t == GgufType::kFloat64;
}

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

std::string shape_string(int n_dims, const int64_t* ne) {
  std::string s = "[";
  for (int i = 0; i < n_dims; ++i) {
    if (i) s += ", ";
    s += std::to_string(ne[i]);
  }
  return s + "]";
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  return is_integer_type(type);
}

size_t GgufValue::array_size() const {
  if (!is_array()) return 0;
  if (elem_type == GgufType::kString) return strs.size();
  if (is_float_type(elem_type)) return floats.size();
  return ints.size();
}

// ---------------------------------------------------------------------------------------------
// Reader

class GgufParser {
 public:
  GgufParser(GgufFile& file, const uint8_t* data, size_t size)
      : f_(file), data_(data), size_(size) {}

  Status parse() {
    KV_RETURN_IF_ERROR(parse_preamble());
    KV_RETURN_IF_ERROR(parse_metadata());
    KV_RETURN_IF_ERROR(parse_alignment());
    KV_RETURN_IF_ERROR(parse_tensor_infos());
    return place_tensors();
  }

 private:
  size_t left() const { return size_ - pos_; }

  Status err(StatusCode code, const std::string& msg) const {
    return {code, f_.path_ + ": " + msg};
  }

  Status need(uint64_t n, const std::string& what) const {
    if (n <= left()) return Status::ok();
    return err(StatusCode::kCorrupt, "truncated: " + what + " at offset " + std::to_string(pos_) +
                                         " needs " + std::to_string(n) + " bytes but only " +
                                         std::to_string(left()) + " are left in the file");
  }

  template <typename T>
  Status read(T* out, const std::string& what) {
    KV_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }

  Status read_string(std::string* out, const std::string& what) {
    uint64_t len = 0;
    KV_RETURN_IF_ERROR(read(&len, "length of " + what));
    if (len > left()) {
      return err(StatusCode::kCorrupt, "truncated or corrupt: " + what + " has length " +
                                           std::to_string(len) + " at offset " +
                                           std::to_string(pos_) + " but only " +
                                           std::to_string(left()) + " bytes are left");
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return Status::ok();
  }

  Status parse_preamble() {
    if (size_ < 4) return err(StatusCode::kCorrupt, "truncated: too short for the GGUF magic");
    uint32_t magic = 0;
    KV_RETURN_IF_ERROR(read(&magic, "magic"));
    if (magic != kGgufMagic) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", magic);
      return err(StatusCode::kCorrupt, std::string("bad magic ") + hex + ", expected 'GGUF'");
    }
    KV_RETURN_IF_ERROR(read(&f_.version_, "version"));
    if (f_.version_ == 1) {
      return err(StatusCode::kUnsupported,
                 "GGUF version 1 is not supported (32-bit counts); expected version 2 or 3");
    }
    if (f_.version_ != 2 && f_.version_ != 3) {
      return err(
          StatusCode::kUnsupported,
          "unsupported GGUF version " + std::to_string(f_.version_) + ", expected version 2 or 3");
    }
    KV_RETURN_IF_ERROR(read(&n_tensors_, "tensor count"));
    KV_RETURN_IF_ERROR(read(&n_kv_, "metadata KV count"));
    // Smallest possible records: KV = key length (8) + type (4) + 1 byte value;
    // tensor info = name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
    constexpr uint64_t kMinKv = 13, kMinTensor = 32;
    if (n_kv_ > left() / kMinKv) {
      return err(StatusCode::kCorrupt, "metadata KV count " + std::to_string(n_kv_) +
                                           " is impossible: only " + std::to_string(left()) +
                                           " bytes follow the header (truncated or corrupt)");
    }
    if (n_tensors_ > (left() - n_kv_ * kMinKv) / kMinTensor) {
      return err(StatusCode::kCorrupt, "tensor count " + std::to_string(n_tensors_) +
                                           " is impossible: only " + std::to_string(left()) +
                                           " bytes follow the header (truncated or corrupt)");
    }
    return Status::ok();
  }

  Status read_scalar(GgufType t, GgufValue* v, const std::string& what) {
    switch (t) {
      case GgufType::kUint8:
        return read_int<uint8_t>(&v->i, what);
      case GgufType::kInt8:
        return read_int<int8_t>(&v->i, what);
      case GgufType::kUint16:
        return read_int<uint16_t>(&v->i, what);
      case GgufType::kInt16:
        return read_int<int16_t>(&v->i, what);
      case GgufType::kUint32:
        return read_int<uint32_t>(&v->i, what);
      case GgufType::kInt32:
        return read_int<int32_t>(&v->i, what);
      case GgufType::kUint64:
        return read_int<uint64_t>(&v->i, what);
      case GgufType::kInt64:
        return read_int<int64_t>(&v->i, what);
      case GgufType::kFloat32: {
        float x = 0;
        KV_RETURN_IF_ERROR(read(&x, what));
        v->f = x;
        return Status::ok();
      }
      case GgufType::kFloat64:
        return read(&v->f, what);
      case GgufType::kBool: {
        uint8_t b = 0;
        KV_RETURN_IF_ERROR(read(&b, what));
        if (b > 1) {
          return err(StatusCode::kCorrupt, what + " is a bool with byte value " +
                                               std::to_string(b) + ", expected 0 or 1");
        }
        v->b = b != 0;
        v->i = b;
        return Status::ok();
      }
      case GgufType::kString:
        return read_string(&v->s, what);
      case GgufType::kArray:
        break;
    }
    return err(StatusCode::kInternal, "read_scalar on an array");
  }

  template <typename T>
  Status read_int(int64_t* out, const std::string& what) {
    T x{};
    KV_RETURN_IF_ERROR(read(&x, what));
    *out = static_cast<int64_t>(x);  // uint64 above INT64_MAX wraps, as documented
    return Status::ok();
  }

  Status read_array(const std::string& key, GgufValue* v) {
    uint32_t et = 0;
    uint64_t n = 0;
    KV_RETURN_IF_ERROR(read(&et, "element type of array '" + key + "'"));
    if (!is_valid_type(et)) {
      return err(StatusCode::kCorrupt,
                 "array '" + key + "' has unknown element type " + std::to_string(et));
    }
    v->elem_type = static_cast<GgufType>(et);
    if (v->elem_type == GgufType::kArray) {
      return err(
          StatusCode::kUnsupported,
          "metadata key '" + key + "' is a nested array (arrays of arrays are not supported)");
    }
    KV_RETURN_IF_ERROR(read(&n, "length of array '" + key + "'"));
    const size_t elem_min = v->elem_type == GgufType::kString ? 8 : scalar_size(v->elem_type);
    if (n > left() / elem_min) {
      return err(StatusCode::kCorrupt, "truncated or corrupt: array '" + key + "' claims " +
                                           std::to_string(n) + " " + gguf_type_name(v->elem_type) +
                                           " elements but only " + std::to_string(left()) +
                                           " bytes are left");
    }
    const std::string what = "element of array '" + key + "'";
    GgufValue tmp;
    if (v->elem_type == GgufType::kString) {
      v->strs.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        KV_RETURN_IF_ERROR(read_string(&tmp.s, what));
        v->strs.push_back(std::move(tmp.s));
      }
    } else if (is_float_type(v->elem_type)) {
      v->floats.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        KV_RETURN_IF_ERROR(read_scalar(v->elem_type, &tmp, what));
        v->floats.push_back(tmp.f);
      }
    } else {
      v->ints.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        KV_RETURN_IF_ERROR(read_scalar(v->elem_type, &tmp, what));
        v->ints.push_back(tmp.i);
      }
    }
    return Status::ok();
  }

  Status parse_metadata() {
    for (uint64_t i = 0; i < n_kv_; ++i) {
      std::string key;
      KV_RETURN_IF_ERROR(read_string(&key, "key of metadata entry #" + std::to_string(i)));
      uint32_t t = 0;
      KV_RETURN_IF_ERROR(read(&t, "value type of '" + key + "'"));
      if (!is_valid_type(t)) {
        return err(StatusCode::kCorrupt,
                   "metadata key '" + key + "' has unknown value type " + std::to_string(t));
      }
      GgufValue v;
      v.type = static_cast<GgufType>(t);
      if (v.type == GgufType::kArray) {
        KV_RETURN_IF_ERROR(read_array(key, &v));
      } else {
        KV_RETURN_IF_ERROR(read_scalar(v.type, &v, "value of '" + key + "'"));
      }
      if (f_.kv_.count(key)) {
        return err(StatusCode::kCorrupt, "duplicate metadata key '" + key + "'");
      }
      f_.kv_.emplace(std::move(key), std::move(v));
    }
    return Status::ok();
  }

  Status parse_alignment() {
    const GgufValue* a = f_.find("general.alignment");
    if (!a) return Status::ok();
    if (!a->is_integer() || a->i <= 0 || static_cast<uint64_t>(a->i) > kMaxAlignment ||
        (a->i & (a->i - 1)) != 0) {
      return err(StatusCode::kCorrupt,
                 "general.alignment must be a power of two integer up to 2^24, got " +
                     (a->is_integer() ? std::to_string(a->i)
                                      : std::string("a ") + gguf_type_name(a->type)));
    }
    f_.alignment_ = static_cast<size_t>(a->i);
    return Status::ok();
  }

  Status parse_tensor_infos() {
    f_.tensors_.reserve(n_tensors_);  // bounded by the file size in parse_preamble
    offsets_.reserve(n_tensors_);
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      TensorView t;
      KV_RETURN_IF_ERROR(read_string(&t.name, "name of tensor #" + std::to_string(i)));
      const std::string q = "'" + t.name + "'";
      uint32_t n_dims = 0;
      KV_RETURN_IF_ERROR(read(&n_dims, "n_dims of tensor " + q));
      if (n_dims < 1 || n_dims > kMaxDims) {
        return err(StatusCode::kCorrupt, "tensor " + q + " has n_dims " + std::to_string(n_dims) +
                                             ", expected 1 to " + std::to_string(kMaxDims));
      }
      t.n_dims = static_cast<int>(n_dims);
      int64_t n_elems = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        uint64_t ne = 0;
        KV_RETURN_IF_ERROR(read(&ne, "dimension " + std::to_string(d) + " of tensor " + q));
        if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return err(StatusCode::kCorrupt, "tensor " + q + " has dimension " + std::to_string(d) +
                                               " = " + std::to_string(ne) +
                                               ", expected 1 to 2^63-1");
        }
        t.ne[d] = static_cast<int64_t>(ne);
        if (__builtin_mul_overflow(n_elems, t.ne[d], &n_elems)) {
          return err(StatusCode::kCorrupt, "tensor " + q + " element count overflows (shape " +
                                               shape_string(t.n_dims, t.ne) + ")");
        }
      }
      uint32_t type = 0;
      KV_RETURN_IF_ERROR(read(&type, "type of tensor " + q));
      const std::optional<DTypeInfo> info = dtype_info(type);
      if (!info) {
        return err(StatusCode::kUnsupported,
                   "unknown tensor type " + std::to_string(type) + " for tensor " + q);
      }
      t.type = static_cast<DType>(type);
      if (t.ne[0] % info->block_elems != 0) {
        return err(StatusCode::kCorrupt, "tensor " + q + " has ne[0] = " + std::to_string(t.ne[0]) +
                                             ", not a multiple of the " + info->name +
                                             " block size " + std::to_string(info->block_elems));
      }
      uint64_t offset = 0;
      KV_RETURN_IF_ERROR(read(&offset, "data offset of tensor " + q));
      if (offset % f_.alignment_ != 0) {
        return err(StatusCode::kCorrupt, "tensor " + q + " data offset " + std::to_string(offset) +
                                             " is misaligned: not a multiple of the alignment " +
                                             std::to_string(f_.alignment_));
      }
      const unsigned __int128 bytes =
          static_cast<unsigned __int128>(n_elems / info->block_elems) * info->block_bytes;
      if (bytes > size_) {
        return err(StatusCode::kCorrupt, "tensor " + q + " of shape " +
                                             shape_string(t.n_dims, t.ne) +
                                             " needs more bytes than the whole file has (" +
                                             std::to_string(size_) + "): truncated or corrupt");
      }
      t.n_bytes = static_cast<size_t>(bytes);
      if (f_.tensor_index_.count(t.name)) {
        return err(StatusCode::kCorrupt, "duplicate tensor name " + q);
      }
      f_.tensor_index_.emplace(t.name, f_.tensors_.size());
      f_.tensors_.push_back(std::move(t));
      offsets_.push_back(offset);
    }
    return Status::ok();
  }

  Status place_tensors() {
    const uint64_t data_start = align_up(pos_, f_.alignment_);
    for (size_t i = 0; i < f_.tensors_.size(); ++i) {
      TensorView& t = f_.tensors_[i];
      const unsigned __int128 begin = static_cast<unsigned __int128>(data_start) + offsets_[i];
      const unsigned __int128 end = begin + t.n_bytes;
      if (end > size_) {
        return err(StatusCode::kCorrupt,
                   "tensor '" + t.name + "' data at offset " + std::to_string(offsets_[i]) + " (" +
                       std::to_string(t.n_bytes) + " bytes from file byte " +
                       std::to_string(static_cast<uint64_t>(std::min<unsigned __int128>(
                           begin, std::numeric_limits<uint64_t>::max()))) +
                       ") lies past the end of the file (" + std::to_string(size_) +
                       " bytes): the file is truncated or the offset is out of bounds");
      }
      t.data = data_ + static_cast<size_t>(begin);
    }
    return Status::ok();
  }

  GgufFile& f_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  std::vector<uint64_t> offsets_;
};

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    const std::string msg = path + ": cannot open: " + std::strerror(e);
    return e == ENOENT ? not_found(msg) : io_error(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + ": not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    return corrupt(path + ": truncated: the file is empty (0 bytes), expected a GGUF header");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);
  if (map == MAP_FAILED) return io_error(path + ": mmap failed: " + std::strerror(e));
  f->map_ = map;
  f->map_size_ = size;
  GgufParser parser(*f, static_cast<const uint8_t*>(map), size);
  KV_RETURN_IF_ERROR(parser.parse());
  return f;
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, map_size_);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
Status missing_key(const std::string& path, std::string_view key) {
  return not_found(path + ": metadata key '" + std::string(key) + "' not found");
}
Status wrong_type(const std::string& path, std::string_view key, const GgufValue& v,
                  const char* expected) {
  return invalid_argument(path + ": metadata key '" + std::string(key) + "' has type " +
                          gguf_type_name(v.type) + ", expected " + expected);
}
}  // namespace

Result<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path_, key);
  if (!v->is_integer()) return wrong_type(path_, key, *v, "an integer");
  return v->i;
}

Result<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path_, key);
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  return wrong_type(path_, key, *v, "a number");
}

Result<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path_, key);
  if (v->type != GgufType::kString) return wrong_type(path_, key, *v, "a string");
  return v->s;
}

Result<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(path_, key);
  if (v->type != GgufType::kBool) return wrong_type(path_, key, *v, "a bool");
  return v->b;
}

const TensorView* GgufFile::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>* out) : out_(out) {}
  template <typename T>
  void put(T v) {
    const size_t n = out_->size();
    out_->resize(n + sizeof(T));
    std::memcpy(out_->data() + n, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_->insert(out_->end(), s.begin(), s.end());
  }
  void put_scalar(GgufType t, int64_t i, double f, bool b) {
    switch (t) {
      case GgufType::kUint8:
        put<uint8_t>(static_cast<uint8_t>(i));
        break;
      case GgufType::kInt8:
        put<int8_t>(static_cast<int8_t>(i));
        break;
      case GgufType::kUint16:
        put<uint16_t>(static_cast<uint16_t>(i));
        break;
      case GgufType::kInt16:
        put<int16_t>(static_cast<int16_t>(i));
        break;
      case GgufType::kUint32:
        put<uint32_t>(static_cast<uint32_t>(i));
        break;
      case GgufType::kInt32:
        put<int32_t>(static_cast<int32_t>(i));
        break;
      case GgufType::kUint64:
        put<uint64_t>(static_cast<uint64_t>(i));
        break;
      case GgufType::kInt64:
        put<int64_t>(i);
        break;
      case GgufType::kFloat32:
        put<float>(static_cast<float>(f));
        break;
      case GgufType::kFloat64:
        put<double>(f);
        break;
      case GgufType::kBool:
        put<uint8_t>(b ? 1 : 0);
        break;
      case GgufType::kString:
      case GgufType::kArray:
        KV_ASSERT(false && "not a scalar");
        break;
    }
  }
  void put_value(const GgufValue& v) {
    put<uint32_t>(static_cast<uint32_t>(v.type));
    if (v.type == GgufType::kString) {
      put_string(v.s);
    } else if (v.type == GgufType::kArray) {
      KV_ASSERT(v.elem_type != GgufType::kArray);
      put<uint32_t>(static_cast<uint32_t>(v.elem_type));
      put<uint64_t>(v.array_size());
      if (v.elem_type == GgufType::kString) {
        for (const std::string& s : v.strs) put_string(s);
      } else if (is_float_type(v.elem_type)) {
        for (double x : v.floats) put_scalar(v.elem_type, 0, x, false);
      } else {
        for (int64_t x : v.ints) put_scalar(v.elem_type, x, 0, x != 0);
      }
    } else {
      put_scalar(v.type, v.i, v.f, v.b);
    }
  }
  void pad_to(size_t alignment) { out_->resize(align_up(out_->size(), alignment), 0); }

 private:
  std::vector<uint8_t>* out_;
};

GgufValue scalar_value(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

GgufValue array_value(GgufType elem) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem_type = elem;
  return v;
}

}  // namespace

void GgufWriter::set_value(const std::string& key, GgufValue v) {
  for (Entry& e : kv_) {
    if (e.key == key) {
      e.value = std::move(v);
      return;
    }
  }
  kv_.push_back({key, std::move(v)});
}

void GgufWriter::set_u32(const std::string& key, uint32_t x) {
  GgufValue v = scalar_value(GgufType::kUint32);
  v.i = x;
  set_value(key, std::move(v));
}

void GgufWriter::set_i32(const std::string& key, int32_t x) {
  GgufValue v = scalar_value(GgufType::kInt32);
  v.i = x;
  set_value(key, std::move(v));
}

void GgufWriter::set_u64(const std::string& key, uint64_t x) {
  GgufValue v = scalar_value(GgufType::kUint64);
  v.i = static_cast<int64_t>(x);
  set_value(key, std::move(v));
}

void GgufWriter::set_f32(const std::string& key, float x) {
  GgufValue v = scalar_value(GgufType::kFloat32);
  v.f = x;
  set_value(key, std::move(v));
}

void GgufWriter::set_bool(const std::string& key, bool x) {
  GgufValue v = scalar_value(GgufType::kBool);
  v.b = x;
  v.i = x ? 1 : 0;
  set_value(key, std::move(v));
}

void GgufWriter::set_string(const std::string& key, const std::string& x) {
  GgufValue v = scalar_value(GgufType::kString);
  v.s = x;
  set_value(key, std::move(v));
}

void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& x) {
  GgufValue v = array_value(GgufType::kString);
  v.strs = x;
  set_value(key, std::move(v));
}

void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& x) {
  GgufValue v = array_value(GgufType::kFloat32);
  v.floats.assign(x.begin(), x.end());
  set_value(key, std::move(v));
}

void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& x) {
  GgufValue v = array_value(GgufType::kInt32);
  v.ints.assign(x.begin(), x.end());
  set_value(key, std::move(v));
}

void GgufWriter::set_alignment(uint32_t a) {
  KV_ASSERT(a > 0 && (a & (a - 1)) == 0);
  alignment_ = a;
  set_u32("general.alignment", a);
}

size_t GgufWriter::tensor_bytes(const Tensor& t) {
  size_t rows = 1;
  for (size_t i = 1; i < t.dims.size(); ++i) rows *= static_cast<size_t>(t.dims[i]);
  return row_bytes(t.type, t.dims[0]) * rows;
}

void GgufWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& dims,
                            std::vector<uint8_t> data) {
  add_tensor_deferred(name, type, dims);
  Tensor& t = tensors_.back();
  KV_ASSERT(data.size() == tensor_bytes(t));
  t.data = std::move(data);
  t.deferred = false;
}

void GgufWriter::add_tensor_deferred(const std::string& name, DType type,
                                     const std::vector<int64_t>& dims) {
  KV_ASSERT(!dims.empty() && dims.size() <= static_cast<size_t>(kMaxDims));
  for (int64_t d : dims) KV_ASSERT(d > 0);
  KV_ASSERT(dims[0] % dtype_info(type).block_elems == 0);
  tensors_.push_back({name, type, dims, {}, true});
}

std::vector<uint8_t> GgufWriter::serialize_header(std::vector<uint64_t>* offsets) const {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.put<uint32_t>(kGgufMagic);
  w.put<uint32_t>(3);
  w.put<uint64_t>(tensors_.size());
  w.put<uint64_t>(kv_.size());
  for (const Entry& e : kv_) {
    w.put_string(e.key);
    w.put_value(e.value);
  }
  uint64_t offset = 0;
  offsets->clear();
  for (const Tensor& t : tensors_) {
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) w.put<uint64_t>(static_cast<uint64_t>(d));
    w.put<uint32_t>(static_cast<uint32_t>(t.type));
    w.put<uint64_t>(offset);
    offsets->push_back(offset);
    offset = align_up(offset + tensor_bytes(t), alignment_);
  }
  w.pad_to(alignment_);
  return out;
}

std::vector<uint8_t> GgufWriter::serialize() const {
  std::vector<uint64_t> offsets;
  std::vector<uint8_t> out = serialize_header(&offsets);
  ByteWriter w(&out);
  for (const Tensor& t : tensors_) {
    KV_ASSERT(!t.deferred && "serialize() needs every tensor's data; use write_streaming");
    out.insert(out.end(), t.data.begin(), t.data.end());
    w.pad_to(alignment_);
  }
  return out;
}

Status GgufWriter::write(const std::string& path) const {
  return write_streaming(path, nullptr);
}

Status GgufWriter::write_streaming(const std::string& path, const TensorProducer& produce) const {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return io_error(path + ": cannot create: " + std::strerror(errno));
  std::vector<char> buf(size_t{1} << 20);
  std::setvbuf(f, buf.data(), _IOFBF, buf.size());
  uint64_t written = 0;
  auto put = [&](const void* data, size_t n) -> Status {
    if (n && std::fwrite(data, 1, n, f) != n) {
      return io_error(path + ": write failed: " + std::strerror(errno));
    }
    written += n;
    return Status::ok();
  };
  auto pad = [&]() -> Status {
    static const uint8_t zeros[64] = {};
    while (written % alignment_) {
      KV_RETURN_IF_ERROR(
          put(zeros, std::min<uint64_t>(sizeof zeros, alignment_ - written % alignment_)));
    }
    return Status::ok();
  };
  auto body = [&]() -> Status {
    std::vector<uint64_t> offsets;
    const std::vector<uint8_t> header = serialize_header(&offsets);
    KV_RETURN_IF_ERROR(put(header.data(), header.size()));
    const uint64_t data_start = written;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      KV_ASSERT(written == data_start + offsets[i]);
      if (!t.deferred) {
        KV_RETURN_IF_ERROR(put(t.data.data(), t.data.size()));
      } else {
        if (!produce) {
          return invalid_argument(path + ": tensor '" + t.name + "' has no data (no producer)");
        }
        const uint64_t begin = written;
        KV_RETURN_IF_ERROR(produce(i, put));
        if (written - begin != tensor_bytes(t)) {
          return Status(StatusCode::kInternal, path + ": producer wrote " +
                                                   std::to_string(written - begin) +
                                                   " bytes for tensor '" + t.name + "', expected " +
                                                   std::to_string(tensor_bytes(t)));
        }
      }
      KV_RETURN_IF_ERROR(pad());
    }
    return Status::ok();
  };
  Status st = body();
  if (std::fclose(f) != 0 && st.is_ok()) {
    st = io_error(path + ": close failed: " + std::strerror(errno));
  }
  if (!st.is_ok()) std::remove(path.c_str());
  return st;
}

}  // namespace kvserve
