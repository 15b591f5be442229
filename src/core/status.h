// Status and Result<T>: the error channel for expected failures (bad files, bad requests, out of
// KV blocks). Broken invariants use KV_ASSERT instead; exceptions only at program boundaries.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace kvserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // malformed input from a user or a file
  kNotFound,         // missing file, key or tensor
  kCorrupt,          // a file that does not follow its format
  kUnsupported,      // valid, but not something kvserve implements
  kOutOfMemory,      // KV blocks or a budget exhausted
  kIoError,
  kInternal,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corrupt: <message>"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status out_of_memory(std::string m) { return {StatusCode::kOutOfMemory, std::move(m)}; }
inline Status io_error(std::string m) { return {StatusCode::kIoError, std::move(m)}; }

// A value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).is_ok()) std::abort();  // a Result error must carry an error
  }
  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kvserve

#define KV_RETURN_IF_ERROR(expr)           \
  do {                                     \
    ::kvserve::Status _st = (expr);        \
    if (!_st.is_ok()) return _st;          \
  } while (0)

#define KV_CONCAT_INNER(a, b) a##b
#define KV_CONCAT(a, b) KV_CONCAT_INNER(a, b)
// KV_ASSIGN_OR_RETURN(auto x, f());
#define KV_ASSIGN_OR_RETURN(lhs, expr)                             \
  auto KV_CONCAT(_res_, __LINE__) = (expr);                        \
  if (!KV_CONCAT(_res_, __LINE__).is_ok())                         \
    return KV_CONCAT(_res_, __LINE__).status();                    \
  lhs = std::move(KV_CONCAT(_res_, __LINE__)).value()
