// SPDX-License-Identifier: Apache-2.0
//
// A guest disk's first sectors as input: partition table (MBR with logical
// partitions, GPT) and LVM2 label, metadata area and text.  Every partition
// found must lie inside the disk; reads outside it must never happen.
#include "image/lvm.h"
#include "image/partitions.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The disk is the input, repeated zeros after it up to 4x its size (so a
  // GPT backup header near the end can be reached), whole sectors.
  const uint64_t disk = ((size * 4 + 511) / 512) * 512;
  cbt::image::ReadAt read = [&](uint64_t off, void* buf, size_t len) -> cbt::Status {
    if (off > disk || len > disk - off) std::abort();  // parsers must check bounds first
    auto* out = static_cast<unsigned char*>(buf);
    for (size_t i = 0; i < len; ++i) out[i] = off + i < size ? data[off + i] : 0;
    return cbt::Status::Ok();
  };
  auto t = cbt::image::ReadPartitionTable(read, disk);
  for (const auto& p : t.partitions) {
    if (p.offset > disk || p.length > disk - p.offset || p.length == 0) std::abort();
  }
  std::vector<std::string> notes;
  auto pv = cbt::image::ReadLvmPv(read, "d", 0, disk, &notes);
  if (pv && !pv->metadata.empty()) (void)cbt::image::ParseLvmMetadata(pv->metadata);
  return 0;
}
