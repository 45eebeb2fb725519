// SPDX-License-Identifier: Apache-2.0
//
// What is inside the disks of a point, as files: the partitions
// (image/partitions.h) and LVM2 linear logical volumes (image/lvm.h) found
// by reading the composed disks and nothing else (no device is attached, no
// volume group activated, so a guest's VG names can never clash with the
// host's), how each is read (VolumeImage), and the names of the files cbtfs
// shows for disks, partitions and LVs, so that cbtfs and `cbt-backup mount`
// agree on them.
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

struct PointVolumes {
  std::vector<Volume> volumes;
  std::vector<std::string> notes;
};

// Finds the partitions and linear LVs of the disks of one point.  `disks`
// maps VDI UUID to its composed image.  A damaged table or metadata area
// yields a note and no volumes from it.
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

// ---- Names of the files of a point directory ------------------------------
//
// A point directory of cbtfs holds, besides VM_metadata and point.txt:
//   <vdi>.raw                    each disk
//   <vdi>.part<N>[-<label>].raw  each partition of a disk
//   lvm/<vg>/<lv>.raw            each LVM2 linear logical volume
// Names from the guest (labels, VG and LV names) are reduced to letters,
// digits and "-_.+" (others become '_'), at most 64 characters, no leading
// '.', so that no name is "." or "..", hidden, or a path.

inline constexpr char kRawSuffix[] = ".raw";
inline constexpr char kLvmDir[] = "lvm";

// "<vdi>.raw".
std::string DiskFileName(const std::string& vdi);

// "<vdi>.part<number>", then "-<label>" if the label leaves anything, ".raw".
std::string PartitionFileName(const std::string& vdi, int number, const std::string& label);

// "lvm/<vg>/<lv>.raw".  When two VGs of a point share a name (two cloned
// guests), `vg_name_shared` tells their directories apart by the start of
// the VG's id: "lvm/<vg>-<first 6 characters of vg_id>/<lv>.raw".
std::string LvFileName(const std::string& vg_name, const std::string& vg_id, bool vg_name_shared,
                       const std::string& lv_name);

// A file of a point directory that may hold a filesystem of its own.
struct ProbeFile {
  std::string path;  // below the point directory: "<vdi>.part1.raw", "lvm/vg/root.raw"
  std::string stem;  // `path` without ".raw", '/' as '-': "lvm-vg-root"; one name, no directory
};

// Lists a directory of a mounted point, given by its path below the point
// directory ("" for the point directory itself).
using ListPointDir = std::function<Result<std::vector<std::string>>(const std::string& rel)>;

// The files of a mounted point directory to look into for filesystems:
// every partition and LV, and each whole disk that has no partitions (the
// filesystems of a partitioned disk are in its partitions), in listing
// order, LVs last.  The error of listing the point directory itself; a
// directory below it that cannot be listed holds nothing to probe.
Result<std::vector<ProbeFile>> FilesToProbe(const ListPointDir& list);

}  // namespace cbt::image

#endif  // CBT_IMAGE_VOLUMES_H_
