// SPDX-License-Identifier: Apache-2.0
//
// The parser of the block store's index files, on any bytes: it must
// refuse or accept, never crash, and what it accepts must re-encode to the
// same bytes (keys sorted and unique, every field kept).
#include "repo/block_store.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto records = cbt::repo::ParseIndex(bytes, "fuzz");
  if (!records.ok()) return 0;
  // Reserved bytes are not kept, so compare the parse of the re-encoding.
  auto again = cbt::repo::ParseIndex(cbt::repo::EncodeIndex(*records), "fuzz");
  if (!again.ok() || again->size() != records->size()) abort();
  for (size_t i = 0; i < records->size(); ++i) {
    const auto& a = (*records)[i];
    const auto& b = (*again)[i];
    if (a.key != b.key || a.ref.pack != b.ref.pack || a.ref.offset != b.ref.offset ||
        a.ref.stored_size != b.ref.stored_size || a.ref.checksum != b.ref.checksum) {
      abort();
    }
  }
  return 0;
}
