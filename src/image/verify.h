// SPDX-License-Identifier: Apache-2.0
//
// Repository verification: re-reads every stored block of the selected
// points and checks it against its checksum, checks every file's header and
// index, and checks that each disk's chain resolves.  Read-only.
//
// Thread-safety: no shared state; one call per thread.
#ifndef CBT_IMAGE_VERIFY_H_
#define CBT_IMAGE_VERIFY_H_

#include "repo/repository.h"
#include "util/status.h"

#include <functional>
#include <string>
#include <vector>

namespace cbt::image {

struct VerifyProblem {
  std::string vm;
  std::string point;
  std::string disk;     // empty for point-level problems
  int64_t offset = -1;  // disk offset of a bad block, -1 if not block-level
  std::string message;
};

struct VerifyReport {
  uint64_t points = 0;
  uint64_t disks = 0;
  uint64_t blocks_checked = 0;
  uint64_t bytes_checked = 0;
  // The block store (format 3).  Every reference of a point checked is
  // checked against the table of its pack (a block of an unfinished or
  // missing pack is a problem); when the whole repository is verified,
  // every index file too, and stored blocks no point reads are counted,
  // not problems.
  bool store_checked = false;
  uint64_t stored_blocks = 0;        // distinct stored blocks referenced
  uint64_t stored_bytes = 0;         // their stored (compressed) bytes
  uint64_t unreferenced_blocks = 0;  // stored, read by no point, not yet released
  uint64_t unreferenced_bytes = 0;
  std::vector<VerifyProblem> problems;
};

// Verifies `vm` (all VMs if empty) and `point` (all points if empty);
// with neither, the block store's references too.
// Returns an error only if verification itself could not run (the
// repository cannot be listed); damage is reported in `report->problems`.
Status VerifyRepository(const repo::Repository& repo, const std::string& vm,
                        const std::string& point, VerifyReport* report,
                        const std::function<void(const VerifyProblem&)>& on_problem);

}  // namespace cbt::image

#endif  // CBT_IMAGE_VERIFY_H_
