// SPDX-License-Identifier: Apache-2.0
//
// Validation here, the decoding itself by OpenSSL's EVP_DecodeBlock, which
// would accept a misplaced '=' (read as a zero digit) and so needs the
// strict check first.
#include "util/base64.h"

#include <openssl/evp.h>

#include <algorithm>

namespace cbt {

namespace {

bool InAlphabet(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
         ch == '+' || ch == '/';
}

}  // namespace

Result<std::string> DecodeBase64(std::string_view text) {
  const Status malformed = Status::Corruption("not valid base64");
  std::string in;
  in.reserve(text.size());
  for (char ch : text) {
    if (ch != '\n' && ch != '\r' && ch != ' ') in += ch;
  }
  if (in.size() % 4 != 0) return malformed;
  // Padding: one or two '=' ending the last group; any other '=' fails the
  // alphabet check below.
  size_t pad = 0;
  while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
  if (!std::all_of(in.begin(), in.end() - static_cast<std::ptrdiff_t>(pad), InAlphabet)) {
    return malformed;
  }
  // EVP_DecodeBlock takes an int length: large input goes in slices of
  // whole groups.  It writes three bytes per group, padding included.
  constexpr size_t kSlice = size_t{1} << 24;
  std::string out(in.size() / 4 * 3, '\0');
  size_t written = 0;
  for (size_t pos = 0; pos < in.size(); pos += kSlice) {
    const size_t n = std::min(kSlice, in.size() - pos);
    const int got = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                    reinterpret_cast<const unsigned char*>(in.data() + pos),
                                    static_cast<int>(n));
    if (got < 0 || static_cast<size_t>(got) != n / 4 * 3) return malformed;
    written += static_cast<size_t>(got);
  }
  out.resize(out.size() - pad);
  return out;
}

}  // namespace cbt
