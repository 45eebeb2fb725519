// SPDX-License-Identifier: Apache-2.0
//
// Base64 decoding (RFC 4648, standard alphabet) for what the XenAPI sends
// as base64, such as VDI.list_changed_blocks' bitmap.  The decoding itself
// is OpenSSL's; this file owns the strictness OpenSSL's decoder lacks (it
// reads '=' anywhere as a zero digit), so a garbled answer is refused
// instead of decoded into wrong bytes.
//
// Thread-safety: pure function.
#ifndef CBT_UTIL_BASE64_H_
#define CBT_UTIL_BASE64_H_

#include "util/status.h"

#include <string>
#include <string_view>

namespace cbt {

// Decodes `text`.  Line breaks ('\n', '\r') and spaces anywhere are
// ignored (XML-RPC servers may wrap long values); what remains must be
// groups of four characters of the standard alphabet, with '=' padding
// required and allowed only as the last one or two characters.  The empty
// string decodes to empty.  Corruption on anything else.
Result<std::string> DecodeBase64(std::string_view text);

}  // namespace cbt

#endif  // CBT_UTIL_BASE64_H_
