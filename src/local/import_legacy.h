// SPDX-License-Identifier: Apache-2.0
//
// Adoption of a repository written by the predecessor, backup.py:
//
//   SOURCE/<vm-uuid>/<timestamp>/VM_metadata
//   SOURCE/<vm-uuid>/<timestamp>/vdis/<snapshot-vdi-uuid>/data           full raw image
//   SOURCE/<vm-uuid>/<timestamp>/vdis/<snapshot-vdi-uuid>/original_uuid  original VDI UUID
//
// Points are imported oldest first under their own timestamps.  Each disk
// becomes a base (first point of that VDI, or its size changed) or an
// overlay holding only the blocks that differ from the previous point of the
// same original VDI.  SOURCE is only read.  A point already in the
// repository is skipped, so importing twice adds nothing twice.
//
// Thread-safety: one import per VM at a time (enforced by the VM lock).
#ifndef CBT_LOCAL_IMPORT_LEGACY_H_
#define CBT_LOCAL_IMPORT_LEGACY_H_

#include "repo/repository.h"
#include "util/status.h"

#include <functional>
#include <string>
#include <vector>

namespace cbt::local {

struct ImportedDisk {
  std::string vdi_uuid;
  bool base = true;
  uint64_t virtual_size = 0;
  uint64_t data_blocks = 0;
  uint64_t zero_blocks = 0;
  uint64_t stored_bytes = 0;
};

struct ImportedPoint {
  std::string vm;
  std::string point;
  bool skipped = false;  // already in the repository
  std::string note;      // why it was skipped, if it was
  std::vector<ImportedDisk> disks;
};

struct ImportOptions {
  std::string only_vm;                          // empty: every VM under SOURCE
  std::function<void(const std::string&)> log;  // one line per event; may be empty
};

// Imports SOURCE into `repo`.  On error, points committed before the error
// stay (each is complete), the point in progress is not visible, and the
// error names what failed.  `out` receives one entry per point examined.
Status ImportLegacy(const repo::Repository& repo, const std::string& source,
                    const ImportOptions& options, std::vector<ImportedPoint>* out);

}  // namespace cbt::local

#endif  // CBT_LOCAL_IMPORT_LEGACY_H_
