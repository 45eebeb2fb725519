// SPDX-License-Identifier: Apache-2.0
//
// The partition table of a guest disk: MBR (primary partitions and the
// chain of logical partitions in an extended one) and UEFI GPT (primary
// header and entry array, falling back to the backup copy at the end of the
// disk).  The disk is hostile input: a damaged table yields a note and no
// partitions from the damaged part, never a read outside the disk.
//
// Thread-safety: pure functions.
#ifndef CBT_IMAGE_PARTITIONS_H_
#define CBT_IMAGE_PARTITIONS_H_

#include "image/read_at.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::image {

struct Partition {
  int number = 0;       // 1-4 primary (MBR) or GPT entry index + 1; 5... logical
  uint64_t offset = 0;  // bytes from the start of the disk
  uint64_t length = 0;
  std::string label;  // GPT partition name, UTF-8; empty for MBR
  std::string type;   // MBR type byte ("0x83") or GPT type GUID
};

struct PartitionTable {
  std::string scheme;  // "gpt", "dos", or "" if the disk has none
  std::vector<Partition> partitions;
  std::vector<std::string> notes;  // damage and things skipped
};

// Reads the partition table of a disk of `disk_size` bytes (512-byte
// sectors, as XenServer VDIs have).  Every partition returned lies inside
// the disk and is not empty.  A GPT with a damaged primary header or entry
// array falls back to the backup copy.  A GPT partition name is decoded
// from UTF-16LE; an unpaired surrogate in it comes out as its 3-byte
// encoding (as in WTF-8) rather than being dropped, so names stay distinct.
PartitionTable ReadPartitionTable(const ReadAt& read, uint64_t disk_size);

}  // namespace cbt::image

#endif  // CBT_IMAGE_PARTITIONS_H_
