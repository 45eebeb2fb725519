// SPDX-License-Identifier: Apache-2.0
//
// run (one named job of the config file: back up, then prune) and jobs
// (list them).  A job is what a systemd timer starts every night, so run
// says everything in one exit status and, if asked, one metrics file:
// success only when every VM was backed up and pruned.
#include "cli.h"

#include "backup/job.h"
#include "util/clock.h"
#include "util/interrupt.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <iostream>

namespace cbt::cli {

namespace {

Result<std::vector<backup::Job>> ConfigJobs(const Globals& g) {
  auto jobs = backup::ParseJobs(g.job_entries);
  if (!jobs.ok()) {
    return Status::InvalidArgument("config file " + g.config_path + ": " + jobs.status().message());
  }
  return jobs;
}

std::string KeepText(const repo::KeepPolicy& k) {
  std::string out;
  for (auto [name, n] : {std::pair<const char*, int>{"last", k.last},
                         {"hourly", k.hourly},
                         {"daily", k.daily},
                         {"weekly", k.weekly},
                         {"monthly", k.monthly},
                         {"yearly", k.yearly}}) {
    if (n > 0) out += (out.empty() ? "" : " ") + std::string(name) + "=" + std::to_string(n);
  }
  return out.empty() ? "no pruning" : out;
}

std::string SelectionText(const backup::Selection& s) {
  std::string out;
  auto add = [&out](const std::string& part) { out += (out.empty() ? "" : " ") + part; };
  if (s.all) add("all");
  for (const auto& v : s.vms) add("vm=" + v);
  for (const auto& t : s.tags) add("tag=" + t);
  for (const auto& e : s.exclude) add("exclude=" + e);
  return out;
}

nlohmann::json JobJson(const backup::Job& j) {
  return {{"name", j.name},
          {"vms", j.selection.vms},
          {"all", j.selection.all},
          {"tags", j.selection.tags},
          {"exclude", j.selection.exclude},
          {"jobs", j.jobs},
          {"host_connections", j.host_connections},
          {"connections", j.connections},
          {"full", j.full},
          {"verify", j.verify},
          {"keep",
           {{"last", j.keep.last},
            {"hourly", j.keep.hourly},
            {"daily", j.keep.daily},
            {"weekly", j.keep.weekly},
            {"monthly", j.keep.monthly},
            {"yearly", j.keep.yearly}}},
          {"repo", j.repo},
          {"metrics_file", j.metrics_file}};
}

int RunJobs(const Globals& g, const po::variables_map&) {
  auto jobs = ConfigJobs(g);
  if (!jobs.ok()) {
    std::fprintf(stderr, "cbt-backup: %s\n", jobs.status().message().c_str());
    return kExitUsage;
  }
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& j : *jobs) out.push_back(JobJson(j));
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  if (jobs->empty()) {
    std::printf("no jobs%s\n",
                g.config_path.empty() ? " (no config file)" : (" in " + g.config_path).c_str());
    return 0;
  }
  std::printf("%-16s %-5s %-5s %-24s %s\n", "JOB", "JOBS", "CONN", "KEEP", "VMS");
  for (const auto& j : *jobs) {
    std::printf("%-16s %-5d %-5d %-24s %s\n", j.name.c_str(), j.jobs, j.host_connections,
                KeepText(j.keep).c_str(), Printable(SelectionText(j.selection)).c_str());
  }
  return 0;
}

int RunJob(const Globals& global, const po::variables_map& vm) {
  if (MissingOption("run", vm, {{"job", "JOB"}})) return kExitUsage;
  auto jobs = ConfigJobs(global);
  if (!jobs.ok()) {
    std::fprintf(stderr, "cbt-backup: %s\n", jobs.status().message().c_str());
    return kExitUsage;
  }
  auto found = backup::FindJob(*jobs, vm["job"].as<std::string>());
  if (!found.ok()) {
    std::fprintf(stderr, "cbt-backup run: %s\n", found.status().message().c_str());
    return kExitUsage;
  }
  const backup::Job& job = *found;
  Globals g = global;
  if (!job.repo.empty()) g.repo = job.repo;
  const std::string metrics =
      vm.count("metrics-file") ? vm["metrics-file"].as<std::string>() : job.metrics_file;
  const bool dry_run = vm.count("dry-run") > 0;

  backup::PoolOptions popt;
  popt.jobs = job.jobs;
  popt.host_connections = job.host_connections;
  popt.backup.connections = job.connections;
  popt.backup.full = job.full;
  popt.backup.verify = job.verify;

  PoolOutcome outcome;
  outcome.started = static_cast<double>(std::time(nullptr));
  const double t0 = MonotonicSeconds();
  // A run that fails before its VMs still leaves a metrics file that says
  // so: a server that is down must page someone too.
  auto fail_run = [&](const Status& st, const repo::Repository* repo) {
    return FailRun(st, dry_run ? "" : metrics, repo, job.name, outcome.started,
                   MonotonicSeconds() - t0);
  };

  Result<repo::Repository> repo = Status::NotFound("no repository opened");
  if (!dry_run) {
    repo = OpenRepo(g, /*create=*/true);
    if (!repo.ok()) return fail_run(repo.status(), nullptr);
  }
  auto vms = SelectForBackup(g, job.selection);
  if (!vms.ok()) return fail_run(vms.status(), repo.ok() ? &*repo : nullptr);
  if (dry_run) {
    std::string what = std::string(job.full ? "full" : "full or incremental") + " backup" +
                       (job.verify ? ", verified" : "");
    if (!job.keep.empty()) what += ", then prune (" + KeepText(job.keep) + ")";
    PrintSelection(g, *vms, what);
    return 0;
  }

  outcome = BackupVms(g, *repo, *vms, popt, job.name);
  outcome.seconds = MonotonicSeconds() - t0;
  // With --json only the report is printed: prune lines would interleave.
  if (!g.json) {
    PrintResults(outcome.results);
    std::fflush(stdout);
  }

  // Prune only the VMs backed up now: a VM whose backup failed keeps every
  // point until it has a new one.
  nlohmann::json prune_json = nlohmann::json::array();
  std::vector<std::string> released;
  uint64_t pruned = 0;
  bool prune_failed = false;
  if (!job.keep.empty() && !Interrupted()) {
    for (const auto& r : outcome.results) {
      if (!r.status.ok()) continue;
      auto p = PruneVm(g, *repo, r.vm.uuid, job.keep, /*dry_run=*/false,
                       /*list_points=*/g.verbosity > 1);
      pruned += p.removed;
      released.insert(released.end(), p.released.begin(), p.released.end());
      p.json["error"] = p.status.ok() ? "" : p.status.message();
      prune_json.push_back(p.json);
      if (!p.status.ok()) {
        prune_failed = true;
        std::fprintf(stderr, "cbt-backup: VM %s (%s): prune failed: %s\n",
                     Printable(r.vm.name).c_str(), r.vm.uuid.c_str(), p.status.message().c_str());
      }
    }
  }
  nlohmann::json gc_json = nullptr;
  if (pruned > 0) {
    bool failed = false;
    gc_json = CollectAfterDelete(g, *repo, &failed);
    if (failed) prune_failed = true;
  }
  auto notes = ReleaseSnapshots(g, released);
  for (const auto& n : notes) Info(g, n);
  outcome.seconds = MonotonicSeconds() - t0;

  if (g.json) {
    nlohmann::json out = {{"job", job.name},
                          {"seconds", outcome.seconds},
                          {"backups", ResultsJson(outcome.results)},
                          {"prune", prune_json},
                          {"pruned_points", pruned},
                          {"gc", gc_json},
                          {"notes", notes}};
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    std::fflush(stdout);
  } else if (!job.keep.empty()) {
    Info(g, "job " + job.name + ": pruned " + std::to_string(pruned) + " point(s) by " +
                KeepText(job.keep));
  }
  int rc = ReportFailures(outcome.results) == 0 && !prune_failed ? 0 : kExitFailure;
  if (!metrics.empty()) {
    if (auto st = WriteRunMetrics(metrics, &*repo, job.name, outcome, pruned, prune_failed);
        !st.ok()) {
      std::fprintf(stderr, "cbt-backup: could not write metrics: %s\n", st.message().c_str());
      rc = kExitFailure;
    }
  }
  return rc;
}

}  // namespace

Command RunCommand() {
  return {"run", "run a job of the config file: back up its VMs, then prune them by its rules",
          "JOB [--dry-run] [--metrics-file FILE] [--json]",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("job", po::value<std::string>(), "the job's name ([job.NAME])")(
                "dry-run,n", "list the job's VMs and what would be done, change nothing")(
                "metrics-file", po::value<std::string>(),
                "write a Prometheus textfile-collector file (overrides the job's metrics-file)");
            p.add("job", 1);
          },
          RunJob};
}

Command JobsCommand() {
  return {"jobs", "list the jobs of the config file", "[--json]",
          [](po::options_description&, po::positional_options_description&) {}, RunJobs};
}

}  // namespace cbt::cli
