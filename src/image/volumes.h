// SPDX-License-Identifier: Apache-2.0
//
// What is inside the disks of a point: partitions (MBR with logical
// partitions, GPT) and LVM2 logical volumes, found by reading the composed
// disks and nothing else (no device is attached, no volume group activated,
// so a guest's VG names can never clash with the host's).
//
// Every parser treats the disk as hostile: a damaged table or metadata area
// yields a note and no volumes from it, never an out-of-range read.
//
// Thread-safety: pure functions; VolumeImage is immutable and safe to share.
#ifndef CBT_IMAGE_VOLUMES_H_
#define CBT_IMAGE_VOLUMES_H_

#include "image/composed_image.h"
#include "util/status.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cbt::image {

// Reads `len` bytes at `off` of one disk; Status on failure or past the end.
using ReadAt = std::function<Status(uint64_t off, void* buf, size_t len)>;

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
// sectors, as XenServer VDIs have).  A GPT with a damaged primary header or
// entry array falls back to the backup copy.
PartitionTable ReadPartitionTable(const ReadAt& read, uint64_t disk_size);

// A piece of a volume: `length` bytes at `offset` of disk `vdi`.
struct Segment {
  std::string vdi;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct Volume {
  std::string path;  // relative file path shown by cbtfs, e.g. "<vdi>.part1.raw", "lvm/vg/lv.raw"
  std::string description;        // one line for point.txt
  std::vector<Segment> segments;  // in volume order
  uint64_t size() const;
};

// A parsed LVM2 volume group (the parts needed to place linear LVs).
struct LvmVg {
  std::string name;
  std::string id;
  uint64_t seqno = 0;
  uint64_t extent_size = 0;  // sectors
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
    std::vector<LvSegment> segments;
  };
  std::vector<Lv> lvs;
};

// Parses LVM2 text metadata (the format of /etc/lvm/backup).  Corruption
// with the line number if it is not valid.
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
// `offset` (of `size` bytes) and reads its metadata.  nullopt if there is no
// label; a note if the label or metadata is damaged.
std::optional<LvmPv> ReadLvmPv(const ReadAt& read, const std::string& vdi, uint64_t offset,
                               uint64_t size, std::vector<std::string>* notes);

struct PointVolumes {
  std::vector<Volume> volumes;
  std::vector<std::string> notes;
};

// Finds the partitions and linear LVs of the disks of one point.  `disks`
// maps VDI UUID to its composed image.
PointVolumes FindVolumes(const std::map<std::string, std::shared_ptr<const ComposedImage>>& disks);

// A volume read through the composed images of its disks.
class VolumeImage {
 public:
  VolumeImage(Volume volume, std::map<std::string, std::shared_ptr<const ComposedImage>> disks);
  uint64_t size() const { return size_; }
  const Volume& volume() const { return volume_; }
  // Same contract as ComposedImage::Read.
  Result<size_t> Read(void* buf, size_t len, uint64_t off) const;

 private:
  Volume volume_;
  std::map<std::string, std::shared_ptr<const ComposedImage>> disks_;
  uint64_t size_ = 0;
};

}  // namespace cbt::image

#endif  // CBT_IMAGE_VOLUMES_H_
