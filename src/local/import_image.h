// SPDX-License-Identifier: Apache-2.0
//
// Adding one point of one disk from a raw image file: the way to bring a
// disk image from elsewhere into the repository, and to build long chains
// quickly when the changed blocks are known (for example from a CBT bitmap).
//
// Thread-safety: one writer per VM at a time (the VM lock enforces it).
#ifndef CBT_LOCAL_IMPORT_IMAGE_H_
#define CBT_LOCAL_IMPORT_IMAGE_H_

#include "repo/repository.h"
#include "util/status.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cbt::local {

struct ImageImportRequest {
  std::string vm;
  std::string vdi;
  std::string point;          // new point's timestamp
  std::string image_path;     // raw image of the whole disk
  std::string metadata_path;  // optional VM metadata blob to store
  bool full = false;          // start a new chain (base) whatever exists
  // Blocks changed since the newest point holding `vdi`.  When set, only
  // these blocks are read; the new point must then be the VM's newest.
  std::optional<std::vector<uint64_t>> changed_blocks;
};

struct ImageImportResult {
  bool base = true;
  std::string parent_point;
  std::string reason;  // why a base was written
  uint64_t data_blocks = 0;
  uint64_t zero_blocks = 0;
  uint64_t stored_bytes = 0;
};

// Commits a new point holding disk `vdi` read from the image.  The point is
// an overlay on the newest earlier point holding the disk at the same size,
// or a base (with the reason) if there is none or `full` is set.  Exists if
// the point already exists; InvalidArgument for a bad request.  On error
// nothing is committed.
Result<ImageImportResult> ImportImage(const repo::Repository& repo,
                                      const ImageImportRequest& request);

}  // namespace cbt::local

#endif  // CBT_LOCAL_IMPORT_IMAGE_H_
