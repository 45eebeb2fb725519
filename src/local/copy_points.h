// SPDX-License-Identifier: Apache-2.0
//
// Copying points between repositories (`cbt-backup copy`), on disk or on an
// object store in any direction, to mirror a repository off site.  A point
// is copied file by file, layers included, so the target's point composes
// to the same bytes with the same chain; its blocks go through the
// target's block store, so a block the target already holds (same content
// key) is referred to, never read from the source nor sent again.  The
// keys of the source's blocks come from its packs' tables, so only blocks
// the target lacks are read.
#ifndef CBT_LOCAL_COPY_POINTS_H_
#define CBT_LOCAL_COPY_POINTS_H_

#include "repo/repository.h"
#include "util/status.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cbt::local {

struct CopyStats {
  std::vector<std::string> copied;   // points copied, oldest first
  std::vector<std::string> present;  // points the target had already
  uint64_t blocks_referred = 0;      // blocks the target already held
  uint64_t blocks_sent = 0;          // blocks read from the source and stored
  uint64_t bytes_stored = 0;         // stored bytes the copy added to the target
};

// Copies every committed point of `vm` in `from` that `to` lacks, oldest
// first, under `to`'s lock of the VM; `on_point` is told of each one
// committed.  A point is committed in the target whole or not at all.
Result<CopyStats> CopyVm(const repo::Repository& from, const repo::Repository& to,
                         const std::string& vm,
                         const std::function<void(const std::string&)>& on_point = nullptr);

}  // namespace cbt::local

#endif  // CBT_LOCAL_COPY_POINTS_H_
