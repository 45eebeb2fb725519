// SPDX-License-Identifier: Apache-2.0
//
// Status and Result<T>: how every fallible engine call reports failure.
// A Status is a code plus a one-line message meant for the user; the
// message says what failed (and, where known, what to do).  Result<T> holds
// either a value or a non-OK Status.  Both are [[nodiscard]] so an ignored
// error is a compile-time warning (and so an error under -Werror).
//
// Thread-safety: values; distinct objects may be used from any thread.
#ifndef CBT_UTIL_STATUS_H_
#define CBT_UTIL_STATUS_H_

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cbt {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,
    kCorruption,
    kNotSupported,
    kInvalidArgument,
    kIoError,
    kBusy,     // another process holds a lock
    kExists,   // the thing to create is already there
    kNoSpace,  // ENOSPC / EDQUOT
    kAborted,  // stopped on purpose (signal, user)
    kRemote,   // the server refused (XenAPI error)
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status NotSupported(std::string msg) {
    return Status(Code::kNotSupported, std::move(msg));
  }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status IoError(std::string msg) { return Status(Code::kIoError, std::move(msg)); }
  static Status Busy(std::string msg) { return Status(Code::kBusy, std::move(msg)); }
  static Status Exists(std::string msg) { return Status(Code::kExists, std::move(msg)); }
  static Status NoSpace(std::string msg) { return Status(Code::kNoSpace, std::move(msg)); }
  static Status Aborted(std::string msg) { return Status(Code::kAborted, std::move(msg)); }
  // A refusal by the server; `detail` is the XenAPI ErrorDescription
  // ([code, params...]) so callers can act on the code.
  static Status Remote(std::string msg, std::vector<std::string> detail = {}) {
    Status s(Code::kRemote, std::move(msg));
    s.detail_ = std::move(detail);
    return s;
  }

  // Maps an errno value from a failed system call on `context` (usually a
  // path) to a Status: ENOENT -> NotFound, ENOSPC/EDQUOT -> NoSpace,
  // EEXIST -> Exists, anything else -> IoError.
  static Status FromErrno(int err, const std::string& context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  // XenAPI error description of a Remote status (empty otherwise).
  const std::vector<std::string>& detail() const { return detail_; }
  // The XenAPI error code of a Remote status, or "".
  std::string remote_code() const { return detail_.empty() ? "" : detail_[0]; }

  // Returns a copy whose message is prefixed by `context: `.
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    Status s(code_, context + ": " + message_);
    s.detail_ = detail_;
    return s;
  }

  // The negative errno a FUSE handler should return for this status.
  int ToNegErrno() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
  std::vector<std::string> detail_;
};

// Either a T or a non-OK Status.  REQUIRES: never built from an OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace cbt

#define CBT_CONCAT_INNER_(a, b) a##b
#define CBT_CONCAT_(a, b) CBT_CONCAT_INNER_(a, b)

// Evaluates `expr` (a Status) and returns it from the enclosing function if
// it is not OK.
#define CBT_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::cbt::Status cbt_status_ = (expr);        \
    if (!cbt_status_.ok()) return cbt_status_; \
  } while (0)

// Evaluates `rexpr` (a Result<T>); on error returns its Status, otherwise
// moves the value into `lhs` (which may be a declaration).
#define CBT_ASSIGN_OR_RETURN(lhs, rexpr)                \
  auto CBT_CONCAT_(cbt_result_, __LINE__) = (rexpr);    \
  if (!CBT_CONCAT_(cbt_result_, __LINE__).ok())         \
    return CBT_CONCAT_(cbt_result_, __LINE__).status(); \
  lhs = std::move(CBT_CONCAT_(cbt_result_, __LINE__)).value()

#endif  // CBT_UTIL_STATUS_H_
