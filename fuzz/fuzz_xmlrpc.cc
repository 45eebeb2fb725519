// SPDX-License-Identifier: Apache-2.0
//
// The XML-RPC response parser sees whatever a server (or a proxy in front of
// it) sends.  It must reject garbage with an error, never crash, and what it
// accepts must survive encoding and parsing again unchanged.
#include "xapi/xmlrpc.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto r = cbt::xapi::ParseResponse(body);
  if (r.ok() && r->success) {
    // A value that parsed must round-trip through the encoder.
    auto again = cbt::xapi::ParseValue(cbt::xapi::EncodeValue(r->value));
    if (!again.ok() || cbt::xapi::EncodeValue(*again) != cbt::xapi::EncodeValue(r->value)) {
      std::abort();
    }
  }
  (void)cbt::xapi::ParseValue(body);
  return 0;
}
