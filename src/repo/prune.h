// SPDX-License-Identifier: Apache-2.0
//
// Removing points: the keep policy that chooses them (restic/borg
// semantics) and the delete that removes them while every remaining point
// keeps reading back bit-identical.
//
// A deleted point's data files are not copied: each later point whose chain
// ran through it takes the files over as "layers" (hard links plus a
// manifest rewrite), and only the blocks those points can no longer reach
// are released, by punching holes.  The work is in proportion to the index
// entries involved, never to the disk size.  docs/FORMAT.md, "Deleting
// points", is the on-disk contract; prune.cc has the step-by-step design.
//
// Crash safety: a journal names the points being deleted; every step is
// idempotent and every intermediate state is a valid repository, so the
// next lock holder (VmLock::Acquire) finishes an interrupted delete.
//
// Thread-safety: ApplyKeepPolicy is pure.  DeletePoints needs the VM's lock.
#ifndef CBT_REPO_PRUNE_H_
#define CBT_REPO_PRUNE_H_

#include "repo/repository.h"
#include "util/status.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cbt::repo {

// Numbers of points each rule keeps; 0 disables a rule.  Buckets are UTC
// hours, days, ISO weeks, months and years (point names are UTC).
struct KeepPolicy {
  int last = 0;
  int hourly = 0;
  int daily = 0;
  int weekly = 0;
  int monthly = 0;
  int yearly = 0;
  bool empty() const { return last + hourly + daily + weekly + monthly + yearly == 0; }
};

struct KeepDecision {
  std::string point;
  std::vector<std::string> reasons;  // rules that keep it; empty if it goes
  bool keep() const { return !reasons.empty(); }
};

// Decides, newest first, which of `points` (timestamps, any order) a policy
// keeps.  A point kept by any rule is kept; each time rule keeps the newest
// point of each of its N newest buckets; the newest point is always kept.
std::vector<KeepDecision> ApplyKeepPolicy(std::vector<std::string> points,
                                          const KeepPolicy& policy);

struct DeleteStats {
  std::vector<std::string> deleted;
  uint64_t layers_moved = 0;     // data files taken over by later points
  uint64_t blocks_released = 0;  // dead blocks whose space was punched out
  uint64_t bytes_released = 0;   // allocated bytes freed (st_blocks), all files
  // snapshot_vdi_uuid of the deleted points' disks: server-side CBT
  // metadata that no later incremental backup starts from.
  std::vector<std::string> released_snapshots;
};

struct DeleteOptions {
  // Called after each durable step with its name; returning false stops
  // the delete there as a crash would (tests use it to check recovery).
  std::function<bool(const std::string& step)> after_step;
};

// Deletes `points` of `vm`.  NotFound (and nothing changed) if one is not a
// committed point.  REQUIRES: `lock` is the lock of `vm`.
Result<DeleteStats> DeletePoints(const Repository& repo, const VmLock& lock, const std::string& vm,
                                 const std::vector<std::string>& points,
                                 const DeleteOptions& options = {});

// Finishes the delete that an interrupted process left in `vm` (its
// journal), if any.  Called by VmLock::Acquire with the lock held; a journal
// that cannot be read is an error naming it, and nothing is changed.
Status FinishInterruptedDelete(const Repository& repo, const std::string& vm);

}  // namespace cbt::repo

#endif  // CBT_REPO_PRUNE_H_
