// SPDX-License-Identifier: Apache-2.0
#include "util/md5.h"

#include <openssl/evp.h>

#include <memory>
#include <vector>

namespace cbt {

Result<std::string> Md5Hex(uint64_t total,
                           const std::function<Status(char*, size_t, uint64_t)>& read) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) != 1) {
    return Status::IoError("MD5 is not available");
  }
  std::vector<char> buf(4 << 20);
  for (uint64_t off = 0; off < total; off += buf.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - off));
    CBT_RETURN_IF_ERROR(read(buf.data(), n, off));
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

}  // namespace cbt
