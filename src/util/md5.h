// SPDX-License-Identifier: Apache-2.0
//
// MD5 of a disk-sized byte stream, as XenServer's VDI.checksum computes it
// (lower-case hex of all virtual_size bytes), on OpenSSL's libcrypto.
//
// Thread-safety: reentrant.
#ifndef CBT_UTIL_MD5_H_
#define CBT_UTIL_MD5_H_

#include "util/status.h"

#include <cstdint>
#include <functional>
#include <string>

namespace cbt {

// MD5 of `total` bytes produced by `read(buf, len, offset)` (which fills
// exactly `len` bytes or fails); lower-case hex.
Result<std::string> Md5Hex(uint64_t total,
                           const std::function<Status(char*, size_t, uint64_t)>& read);

}  // namespace cbt

#endif  // CBT_UTIL_MD5_H_
