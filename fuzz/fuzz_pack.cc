// SPDX-License-Identifier: Apache-2.0
//
// The parsers of a pack's trailer and table, on any bytes taken as a whole
// pack file: they must refuse or accept, never crash or read out of bounds,
// and what they accept must lie inside the file.
#include "repo/pack.h"
#include "util/endian.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cbt::repo;
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  if (file.size() < kPackTrailerSize) return 0;
  auto geometry =
      ParsePackTrailer(file.substr(file.size() - kPackTrailerSize), file.size(), "fuzz");
  if (!geometry.ok()) return 0;
  const auto [table_offset, count] = *geometry;
  if (table_offset > file.size() || count * kPackEntrySize > file.size() - table_offset) abort();
  const std::string_view trailer = file.substr(file.size() - kPackTrailerSize);
  auto records = ParsePackTable(file.substr(table_offset, count * kPackEntrySize), count,
                                table_offset, cbt::LoadLe64(trailer.data() + 24), "fuzz");
  if (!records.ok()) return 0;
  for (const auto& r : *records) {
    if (r.offset < kPackHeaderSize || r.offset + r.stored_size > table_offset) abort();
  }
  return 0;
}
