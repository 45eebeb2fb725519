// SPDX-License-Identifier: Apache-2.0
//
// Named backup jobs from the config file: a section [job.NAME] whose keys
// say which VMs, how many at once, how to keep points, and where to report
// (docs in cbt-backup(8), "CONFIGURATION").  `cbt-backup run NAME` backs up
// the job's VMs and prunes them by its keep rules.
//
// The config file is read by the command line (boost's INI reader, which
// turns "[job.nightly]" + "vm = web" into the key "job.nightly.vm"); this
// file only turns those keys into jobs, so it can be tested without files.
//
// Thread-safety: pure functions.
#ifndef CBT_BACKUP_JOB_H_
#define CBT_BACKUP_JOB_H_

#include "backup/pool_run.h"
#include "repo/prune.h"
#include "util/status.h"

#include <string>
#include <utility>
#include <vector>

namespace cbt::backup {

inline constexpr char kJobPrefix[] = "job.";

struct Job {
  std::string name;
  Selection selection;
  int jobs = 1;               // VMs at once
  int host_connections = 16;  // NBD connections per host over all VMs
  int connections = 4;        // NBD connections per disk
  bool full = false;
  bool verify = false;
  repo::KeepPolicy keep;     // empty: the job does not prune
  std::string repo;          // "" uses the global repository
  std::string metrics_file;  // "" writes no textfile
};

// True for a job name: 1 to 64 of [A-Za-z0-9_-] (it becomes a systemd
// instance name and a metrics label).
bool IsJobName(const std::string& name);

// The jobs that `entries` (key, value pairs in file order, keys starting
// with kJobPrefix) define, sorted by name.  InvalidArgument naming the key
// for an unknown key, a bad value, a bad job name, a number out of range,
// or a job that selects no VM (neither vm, all nor tag).
Result<std::vector<Job>> ParseJobs(const std::vector<std::pair<std::string, std::string>>& entries);

// The job called `name` among `jobs`; NotFound listing the known names.
Result<Job> FindJob(const std::vector<Job>& jobs, const std::string& name);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_JOB_H_
