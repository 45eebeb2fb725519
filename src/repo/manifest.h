// SPDX-License-Identifier: Apache-2.0
//
// The point manifest (manifest.json) and the repository config
// (config.json): their in-memory form and their JSON encoding, as specified
// in docs/FORMAT.md.  Parsing validates every field a reader relies on, so
// the rest of the engine can trust a Manifest it was handed.
//
// Thread-safety: values.
#ifndef CBT_REPO_MANIFEST_H_
#define CBT_REPO_MANIFEST_H_

#include "util/block_codec.h"
#include "util/status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::repo {

inline constexpr int kRepoFormatVersion = 1;
// config.json version of a repository with a block store (packs, indexes,
// version-2 disk files).  2 is skipped: manifests already use it.
inline constexpr int kStoreRepoFormatVersion = 3;
// Manifests are written as version 1 unless a disk has layers (version 2),
// so a reader that predates layers refuses them instead of misreading.
inline constexpr int kManifestLayersVersion = 2;

// A data file that a deleted point wrote and this point took over, because
// the point's disk reads through it (see docs/FORMAT.md, "Deleting points").
struct Layer {
  std::string file;    // LayerFileName(vdi, origin), inside this point's directory
  std::string origin;  // the deleted point that wrote it
};

struct DiskRecord {
  std::string vdi_uuid;           // the original VDI (never the snapshot)
  std::string name;               // VDI name_label at backup time, may be empty
  std::string snapshot_vdi_uuid;  // the server snapshot this point was read from, may be empty
  std::string userdevice;         // VBD position ("0", "1", ...), may be empty
  uint64_t virtual_size = 0;
  std::string file;           // disk data file name inside the point directory
  std::vector<Layer> layers;  // files below `file`, newest first (empty unless points were deleted)
  bool base = true;           // the chain ends here, or continues at `parent_point`
  std::string parent_point;   // empty for a base
  uint64_t data_blocks = 0;
  uint64_t zero_blocks = 0;
  uint64_t stored_bytes = 0;  // bytes the write of `file` added to the repository
  std::string reason;         // why this disk is a base ("first backup", "--full", ...)

  // `file`, then the layers' files: the point's own files, newest first.
  std::vector<std::string> Files() const;
};

// A disk of the VM that the point does not hold, and why (e.g. a sharable
// disk, which XenServer cannot snapshot).
struct SkippedDisk {
  std::string vdi_uuid;
  std::string name;
  std::string reason;
};

struct Manifest {
  int format_version = kRepoFormatVersion;
  std::string vm_uuid;
  std::string vm_name;
  std::string point;       // timestamp, equals the point directory name
  std::string created_by;  // tool and version
  std::string source;      // "xapi", "import-legacy", ...
  std::vector<DiskRecord> disks;
  std::vector<SkippedDisk> skipped_disks;  // disks of the VM left out of this point
  std::string power_state;                 // the VM's power state at backup time, may be empty

  const DiskRecord* FindDisk(const std::string& vdi_uuid) const;
};

class DiskFileWriter;

// A manifest of point `point` of VM `vm` (named `vm_name`, may be empty)
// whose data came from `source` ("xapi", "import-image", ...), with this
// program and its version as created_by.  The caller adds the disks and
// whatever else it knows.
Manifest NewManifest(const std::string& vm, const std::string& vm_name, const std::string& point,
                     const std::string& source);

// The record of disk `vdi_uuid` whose data file `w` wrote (the file
// PointWriter::CreateDisk made for it): file name, kind, virtual size,
// block counts and stored bytes come from `w`.  `parent_point` is the
// parent of an overlay; `reason`, why a base is one (an overlay records
// none).  The caller adds what only it knows (name, snapshot VDI, VBD).
// REQUIRES: `w` is finished; `parent_point` is empty exactly for a base.
DiskRecord NewDiskRecord(const std::string& vdi_uuid, const DiskFileWriter& w,
                         const std::string& parent_point, const std::string& reason);

std::string EncodeManifest(const Manifest& m);
// Corruption if the text is not a valid manifest; NotSupported if its
// format version is unknown.
Result<Manifest> DecodeManifest(const std::string& text, const std::string& what);

// config.json (docs/FORMAT.md, "config.json").
struct RepoConfig {
  int version = kStoreRepoFormatVersion;
  bool compress = true;  // "zstd"; false: "none"
  int level = 3;         // zstd level of new blocks
  // Content keys of stored blocks ("content_key"; absent in a config of
  // version 3 written before BLAKE3 keys: SHA-256).
  KeyAlgorithm key = KeyAlgorithm::kBlake3;
  // S3 Object Lock of a repository on an object store: data objects are
  // written retained for `lock_days` in `lock_mode` ("GOVERNANCE" or
  // "COMPLIANCE"); 0: not locked.
  int lock_days = 0;
  std::string lock_mode;
};

std::string EncodeConfig(const RepoConfig& config = RepoConfig());
// Parses the repository config; Corruption if malformed, NotSupported for
// an unknown version, compression algorithm or content key.
Result<RepoConfig> ParseConfig(const std::string& text, const std::string& what);

}  // namespace cbt::repo

#endif  // CBT_REPO_MANIFEST_H_
