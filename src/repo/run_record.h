// SPDX-License-Identifier: Apache-2.0
//
// The record of a VM's last backup attempt, REPO/<vm>/last-run.json
// (docs/FORMAT.md, "Run record"): when the last backup of the VM ran, how it
// ended, and the last failure, so `cbt-backup status` and monitoring can
// say that a VM has not been backed up and why.  Committed points say when
// backups succeeded; only this file remembers failures.
//
// The record is advisory: no point depends on it, a reader that cannot
// parse it reports that and carries on, and it is replaced whole (temporary
// file and rename), never edited in place.
//
// Thread-safety: free functions; two writers of one VM race and the later
// rename wins, which loses at most one attempt's line.
#ifndef CBT_REPO_RUN_RECORD_H_
#define CBT_REPO_RUN_RECORD_H_

#include "repo/repository.h"
#include "util/status.h"

#include <cstdint>
#include <optional>
#include <string>

namespace cbt::repo {

inline constexpr char kRunRecordFile[] = "last-run.json";

// One backup attempt, as its command saw it.
struct RunAttempt {
  std::string time;  // point-style timestamp of the attempt's start
  bool ok = false;
  std::string error;  // why it failed (empty when ok)
  std::string point;  // the point committed (empty when failed)
  std::string job;    // the job it ran in ("" for a plain backup command)
  double seconds = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_stored = 0;
};

struct RunRecord {
  RunAttempt last;                    // the latest attempt
  std::optional<RunAttempt> failure;  // the latest failed attempt, kept across successes
};

// The record of `vm`; nullopt when it has none.  Corruption naming the
// file if it is malformed or a symbolic link.
Result<std::optional<RunRecord>> ReadRunRecord(const Repository& repo, const std::string& vm);

// Records `attempt` as the latest of `vm`, keeping the last failure.  Does
// nothing when the VM has no directory: a backup makes it (VmLock) as soon
// as it has resolved the VM, so an attempt that failed before never
// resolved it.  An unreadable old record is replaced (it holds nothing a
// point depends on).
Status RecordRun(const Repository& repo, const std::string& vm, const RunAttempt& attempt);

}  // namespace cbt::repo

#endif  // CBT_REPO_RUN_RECORD_H_
