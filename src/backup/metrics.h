// SPDX-License-Identifier: Apache-2.0
//
// The Prometheus textfile-collector file a backup run leaves for
// node_exporter: per VM the last run's result, time, duration and bytes,
// and the time of its newest point; per job the run's time, duration, VM
// and failure counts and points pruned.  Alerts follow from it, e.g.
//   time() - cbt_backup_vm_last_success_timestamp_seconds > 1.5 * 86400
//
// Labels: backup_job (the job's name, "" for a plain backup), vm, vm_name.
// The format is Prometheus's text exposition format 0.0.4: HELP and TYPE
// before each family, label values escaped, one sample per line.  VM names
// come from the server and are passed through Printable first.
//
// Thread-safety: pure functions, and one write of a file.
#ifndef CBT_BACKUP_METRICS_H_
#define CBT_BACKUP_METRICS_H_

#include "util/status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::backup {

struct VmMetrics {
  std::string uuid;
  std::string name;
  bool ok = false;
  double run_time = 0;  // UNIX time the VM's backup started
  double seconds = 0;   // how long it took
  uint64_t bytes_read = 0;
  uint64_t bytes_stored = 0;
  double last_success = 0;  // UNIX time of the newest point; 0 if it has none
};

struct JobMetrics {
  std::string job;  // "" for a plain backup command
  double run_time = 0;
  double seconds = 0;
  uint64_t pruned_points = 0;
  // The run failed as a whole (no login, selection or repository; a
  // prune failed): the job is not a success even if no VM failed.
  bool failed = false;
  std::vector<VmMetrics> vms;
};

// The file's text.
std::string FormatMetrics(const JobMetrics& m);

// Writes FormatMetrics(m) to `path` atomically (node_exporter never reads
// half a file), mode 0644 since node_exporter usually runs as another user;
// the file names VMs but holds no disk data.
Status WriteMetricsFile(const std::string& path, const JobMetrics& m);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_METRICS_H_
