// SPDX-License-Identifier: Apache-2.0
//
// This repository's snapshots on the server: how a backup names and tags
// the VM snapshot it takes and that snapshot's disks, how they are removed
// again (the snapshot VM destroyed, its disks reduced to CBT metadata or
// destroyed), how what an interrupted run left behind is found and
// removed, and whether an SR's driver can track changed blocks at all.
//
// Ownership is the rule throughout: a snapshot is this repository's when
// its name or its other_config tag carries the repository's id, and a disk
// is touched only if it is a snapshot of one of the VM's own disks (never a
// CD's ISO, which VM.snapshot leaves in place) or carries the tag.  Two
// repositories backing up one VM therefore never remove each other's
// snapshots.  Every removal carries on past failures and reports them;
// the next backup retries.
//
// Thread-safety: calls on one session, one at a time.
#ifndef CBT_BACKUP_SNAPSHOT_H_
#define CBT_BACKUP_SNAPSHOT_H_

#include "repo/repository.h"
#include "util/status.h"
#include "xapi/session.h"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace cbt::backup {

// What marks a server object as this repository's, for one VM.
struct SnapshotOwner {
  std::string repo_id;             // the repository's id (repo::Repository::Id)
  std::set<std::string> vm_disks;  // refs of the VM's own disk VDIs
};

// The name VM.snapshot is given.  VM.snapshot sets it itself, so even a run
// killed before it could tag the snapshot leaves one its repository
// recognises.
std::string SnapshotName(const std::string& point, const std::string& repo_id);

// Tags the snapshot VM, or one of its disks, with the repository id.
// VM.snapshot copies other_config, so a stale value is replaced, not added
// to.
Status TagSnapshotVm(xapi::Session& s, const std::string& vm_ref, const std::string& repo_id);
Status TagSnapshotDisk(xapi::Session& s, const std::string& vdi_ref, const std::string& repo_id);

// Destroys snapshot VM `snap_vm` and those of its disks that are this
// repository's: VDI.data_destroy for a disk whose UUID is in `committed`
// (a committed point holds it, and its CBT metadata is the base of the next
// incremental), VDI.destroy for the others.  Carries on past failures and
// returns them, one item each (empty when all went).
std::vector<std::string> RemoveSnapshot(xapi::Session& s, const SnapshotOwner& owner,
                                        const std::string& snap_vm,
                                        const std::set<std::string>& committed);

// The failures of RemoveSnapshot as one line.
std::string JoinFailures(const std::vector<std::string>& failed);

// Removes what earlier runs into `repo` left on the server for VM `vm_ref`
// (`vm_uuid`): this repository's snapshot VMs, then its tagged snapshot
// VDIs whose VM is gone (a run killed between the two).  What was removed,
// and what could not be, is appended to `notes`; progress and failures go
// to `log` too.  Never fails: the backup goes on either way.
void CleanLeftovers(xapi::Session& s, const repo::Repository& repo, const SnapshotOwner& owner,
                    const std::string& vm_ref, const std::string& vm_uuid,
                    std::vector<std::string>* notes,
                    const std::function<void(const std::string&)>& log);

// Whether the driver of SR `sr_ref` tracks changed blocks (the SM record's
// VDI_CONFIG_CBT feature).  Answers are cached per SR type in `cache` for
// one run.  nullopt when the server does not say (the caller then lets
// VDI.enable_cbt decide).
std::optional<bool> SrSupportsCbt(xapi::Session& s, const std::string& sr_ref,
                                  std::map<std::string, std::optional<bool>>* cache);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_SNAPSHOT_H_
