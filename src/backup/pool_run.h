// SPDX-License-Identifier: Apache-2.0
//
// Backing up many VMs of a pool in one command: which VMs a selection
// names (UUIDs or names, every VM, tags, exclusions), and running
// backup::Run over them on a few worker threads, each with its own XenAPI
// session, within one per-host budget of NBD connections.  One VM's failure
// does not stop the others; an interrupted process (util/interrupt.h)
// starts no further VM, and the running ones unwind through their failure
// path (snapshot removed, nothing committed).
//
// Thread-safety: SelectVms uses the caller's session on the caller's
// thread.  RunPool runs its own threads and calls options.login and
// options.backup.log and options.on_done from them concurrently: all must
// be thread-safe.
#ifndef CBT_BACKUP_POOL_RUN_H_
#define CBT_BACKUP_POOL_RUN_H_

#include "backup/backup.h"
#include "repo/repository.h"
#include "util/status.h"
#include "xapi/session.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cbt::backup {

struct Selection {
  std::vector<std::string> vms;      // UUIDs or name labels
  bool all = false;                  // every VM but templates, snapshots, control domains
  std::vector<std::string> tags;     // VMs carrying any of these tags
  std::vector<std::string> exclude;  // UUIDs or name labels left out
};

struct VmInfo {
  std::string uuid;
  std::string name;
  std::string power_state;
  int disks = 0;  // VBDs of type Disk holding a VDI
  std::vector<std::string> tags;
};

// The VMs `selection` names, in the order of their name labels, each once.
// NotFound if a VM given by UUID or name (to select or to exclude) does not
// exist; InvalidArgument if a name is not unique or nothing is selected.
Result<std::vector<VmInfo>> SelectVms(xapi::Session& s, const Selection& selection);

struct VmResult;

struct PoolOptions {
  int jobs = 1;               // VMs backed up at once
  int host_connections = 16;  // NBD connections per host over all running backups
  Options backup;             // for every VM (vm and budget are set per run)
  // A new session for a worker thread; the worker logs it out when done.
  std::function<Result<std::unique_ptr<xapi::Session>>()> login;
  // Called on the worker's thread as each VM that was started ends (never
  // for VMs not started); may be empty.  Must be thread-safe.
  std::function<void(const VmResult&)> on_done;
};

struct VmResult {
  VmInfo vm;
  bool started = false;   // false: interrupted before its turn
  double start_time = 0;  // UNIX time the VM's turn began (when started)
  Status status;          // OK or why the backup failed
  Report report;          // valid when status is OK
  double seconds = 0;
};

// Backs up every VM of `vms`, at most options.jobs at once, and returns one
// result per VM in the order of `vms`.
std::vector<VmResult> RunPool(const repo::Repository& repo, const std::vector<VmInfo>& vms,
                              const PoolOptions& options);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_POOL_RUN_H_
