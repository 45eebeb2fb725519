// SPDX-License-Identifier: Apache-2.0
#include "util/status.h"

#include <cstring>

namespace cbt {

Status Status::FromErrno(int err, const std::string& context) {
  std::string msg = context + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return NotFound(std::move(msg));
    case ENOSPC:
    case EDQUOT:
      return NoSpace(std::move(msg));
    case EEXIST:
      return Exists(std::move(msg));
    default:
      return IoError(std::move(msg));
  }
}

int Status::ToNegErrno() const {
  switch (code_) {
    case Code::kOk:
      return 0;
    case Code::kNotFound:
      return -ENOENT;
    case Code::kInvalidArgument:
      return -EINVAL;
    case Code::kNotSupported:
      return -EOPNOTSUPP;
    case Code::kBusy:
      return -EBUSY;
    case Code::kExists:
      return -EEXIST;
    case Code::kNoSpace:
      return -ENOSPC;
    default:
      return -EIO;
  }
}

}  // namespace cbt
