// SPDX-License-Identifier: Apache-2.0
//
// LVM2 on a guest disk, read without the LVM tools: the physical volume
// label and metadata area of a device (a whole disk or a partition), and the
// text metadata (the format of /etc/lvm/backup) that describes its volume
// group.  Nothing is activated, so a guest's VG names never meet the host's.
// Both are hostile input: damage yields a note or an error, never a read
// outside the device or a crash.
//
// Thread-safety: pure functions.
#ifndef CBT_IMAGE_LVM_H_
#define CBT_IMAGE_LVM_H_

#include "image/read_at.h"
#include "util/status.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cbt::image {

// A parsed LVM2 volume group (the parts needed to place linear LVs).
struct LvmVg {
  std::string name;
  std::string id;
  uint64_t seqno = 0;
  uint64_t extent_size = 0;  // sectors, never 0
  struct Pv {
    std::string id;         // without dashes, as in the PV label
    uint64_t pe_start = 0;  // sectors
  };
  std::map<std::string, Pv> pvs;  // by metadata name ("pv0")
  struct LvSegment {
    uint64_t start_extent = 0;
    uint64_t extent_count = 0;
    std::string type;
    uint64_t stripe_count = 0;
    std::string pv;  // metadata name of the PV (first stripe)
    uint64_t pv_start_extent = 0;
  };
  struct Lv {
    std::string name;
    bool visible = false;
    std::vector<LvSegment> segments;  // by start_extent
  };
  std::vector<Lv> lvs;  // in metadata order
};

// Parses LVM2 text metadata.  Corruption, with the line number, if it is
// not valid; the first section that looks like a volume group is the VG.
Result<LvmVg> ParseLvmMetadata(const std::string& text);

// A physical volume found on a disk or partition.
struct LvmPv {
  std::string id;       // 32 characters, no dashes
  std::string vdi;      // where the device starts
  uint64_t offset = 0;  // of the device (disk or partition) on that disk
  uint64_t size = 0;
  std::string metadata;  // newest metadata text in its first area, may be empty
};

// Looks for an LVM2 label in the first four sectors of the device at
// `offset` of disk `vdi` (of `size` bytes; `read` reads the device, not the
// disk) and reads its metadata.  nullopt if there is no label; a note in
// `notes` if the label or metadata is damaged.
std::optional<LvmPv> ReadLvmPv(const ReadAt& read, const std::string& vdi, uint64_t offset,
                               uint64_t size, std::vector<std::string>* notes);

}  // namespace cbt::image

#endif  // CBT_IMAGE_LVM_H_
