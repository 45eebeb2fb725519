// SPDX-License-Identifier: Apache-2.0
//
// One backup of one VM from a XenServer pool into the repository: CBT
// enabled where the SR allows it, one VM snapshot, the VM metadata, per disk
// a full or incremental read over NBD, an atomic commit, then the snapshot
// reduced to CBT metadata on the server.
//
// Thread-safety: one backup per VM at a time (the VM lock enforces it).
#ifndef CBT_BACKUP_BACKUP_H_
#define CBT_BACKUP_BACKUP_H_

#include "repo/repository.h"
#include "util/status.h"
#include "xapi/session.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cbt::backup {

class ConnectionBudget;  // connection_budget.h

struct Options {
  std::string vm;  // UUID or name label
  bool full = false;
  bool verify = false;
  bool require_tls = true;
  int connections = 4;
  int nbd_timeout = 120;  // seconds for one NBD connection or request
  // When set, each disk read takes its NBD connections from this budget
  // (shared by backups running at once; not owned) and may get fewer than
  // `connections`.
  ConnectionBudget* budget = nullptr;
  std::function<void(const std::string&)> log;  // one line per event
  // Bytes read so far of the disk being read, and its total.
  std::function<void(const std::string& vdi, uint64_t done, uint64_t total)> progress;
};

struct DiskReport {
  std::string vdi_uuid;
  std::string name;
  std::string snapshot_vdi_uuid;
  uint64_t virtual_size = 0;
  std::string mode;    // "full" or "incremental"
  std::string reason;  // why full (empty for incremental)
  std::string parent_point;
  uint64_t changed_blocks = 0;  // blocks read (incremental) or all blocks (full)
  uint64_t bytes_read = 0;      // bytes read over NBD
  uint64_t bytes_stored = 0;    // added to the repository: the disk file and its new blocks
  double seconds = 0;
  std::string verify;  // "", "ok"
};

struct Report {
  std::string vm_uuid;
  std::string vm_name;
  std::string point;
  std::vector<DiskReport> disks;
  std::vector<repo::SkippedDisk> skipped;  // disks left out (sharable, reset on boot)
  std::vector<std::string> notes;          // cleanups and warnings
  double seconds = 0;
};

// Runs a backup.  On error nothing is committed and the snapshot taken by
// this run is removed from the server (best effort, reported in the error
// if it fails).
Result<Report> Run(xapi::Session& session, const repo::Repository& repo, const Options& options);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_BACKUP_H_
