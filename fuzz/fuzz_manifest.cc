// SPDX-License-Identifier: Apache-2.0
//
// manifest.json and config.json are read from a repository that may be
// damaged.  A manifest that decodes must encode to one that decodes to the
// same thing; likewise a config of format 3.
#include "repo/manifest.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (auto c = cbt::repo::ParseConfig(text, "config.json"); c.ok() && c->version == 3) {
    auto back = cbt::repo::ParseConfig(cbt::repo::EncodeConfig(*c), "re-encoded config");
    if (!back.ok() || back->compress != c->compress || (c->compress && back->level != c->level)) {
      std::abort();
    }
  }
  auto m = cbt::repo::DecodeManifest(text, "manifest.json");
  if (!m.ok()) return 0;
  const std::string once = cbt::repo::EncodeManifest(*m);
  auto again = cbt::repo::DecodeManifest(once, "re-encoded");
  if (!again.ok() || cbt::repo::EncodeManifest(*again) != once) std::abort();
  return 0;
}
