// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "backup/backup.h"
#include "backup/metrics.h"
#include "backup/pool_run.h"
#include "nbd/nbd_reader.h"
#include "repo/layout.h"
#include "repo/run_record.h"
#include "util/clock.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

namespace cbt::cli {

namespace {

nlohmann::json DiskJson(const backup::DiskReport& d) {
  return {{"vdi", d.vdi_uuid},
          {"name", d.name},
          {"snapshot_vdi", d.snapshot_vdi_uuid},
          {"mode", d.mode},
          {"reason", d.reason},
          {"parent_point", d.parent_point},
          {"virtual_size", d.virtual_size},
          {"blocks_read", d.changed_blocks},
          {"bytes_read", d.bytes_read},
          {"bytes_stored", d.bytes_stored},
          {"seconds", d.seconds},
          {"verify", d.verify.empty() ? "skipped" : d.verify}};
}

std::pair<uint64_t, uint64_t> ReadAndStored(const backup::Report& report) {
  uint64_t read = 0, stored = 0;
  for (const auto& d : report.disks) {
    read += d.bytes_read;
    stored += d.bytes_stored;
  }
  return {read, stored};
}

// Records one VM's attempt for `status` and monitoring.  A failure to write
// it is reported but changes no result: the point, if any, is committed.
void Record(const Globals& g, const repo::Repository& repo, const std::string& vm_uuid,
            double start_time, double seconds, const Status& status, const backup::Report& report,
            const std::string& job) {
  if (!repo::IsUuid(vm_uuid)) return;
  repo::RunAttempt a;
  a.time = repo::FormatTimestamp(static_cast<std::time_t>(start_time));
  a.ok = status.ok();
  a.error = status.ok() ? "" : status.message();
  a.point = report.point;
  a.job = job;
  a.seconds = seconds;
  std::tie(a.bytes_read, a.bytes_stored) = ReadAndStored(report);
  if (auto st = repo::RecordRun(repo, vm_uuid, a); !st.ok()) {
    Info(g, "could not record the run of VM " + vm_uuid + ": " + st.message());
  }
}

// One VM given by --vm alone: the command as it always was, its output
// and --json shape unchanged.
int RunOne(const Globals& g, const po::variables_map& vm, const std::string& vm_name) {
  auto repo = OpenRepo(g, /*create=*/true);
  if (!repo.ok()) return Fail(repo.status());
  auto session = Login(g);
  if (!session.ok()) return Fail(session.status());
  // The snapshot and the API calls before the first NBD read leave time to
  // load libnbd.  Started after the login: both loads would otherwise take
  // turns on the dynamic linker's lock, delaying the login.
  std::jthread nbd_preload;
  try {
    nbd_preload = std::jthread([] { nbd::Preload(); });
  } catch (const std::system_error&) {
    // No thread: libnbd loads at the first connection instead.
  }

  backup::Options opt;
  opt.vm = vm_name;
  opt.full = vm.count("full") > 0;
  opt.verify = vm.count("verify") > 0;
  opt.require_tls = g.tls;
  opt.nbd_timeout = g.nbd_timeout;
  opt.connections = vm["connections"].as<int>();
  if (opt.connections < 1 || opt.connections > 16) {
    std::fprintf(stderr, "cbt-backup backup: --connections must be 1..16\n");
    return kExitUsage;
  }
  opt.log = [&g](const std::string& line) { Info(g, line); };
  ProgressBar bar(g);
  opt.progress = [&bar](const std::string& vdi, uint64_t done, uint64_t total) {
    bar.Update("disk " + vdi.substr(0, 8), done, total);
  };
  const double start_time = static_cast<double>(std::time(nullptr));
  const double t0 = MonotonicSeconds();
  auto report = backup::Run(**session, *repo, opt);
  bar.Finish();
  Record(g, *repo, report.ok() ? report->vm_uuid : vm_name, start_time, MonotonicSeconds() - t0,
         report.status(), report.ok() ? *report : backup::Report{}, "");
  if (!report.ok()) return Fail(report.status());
  if (g.json) {
    nlohmann::json out = {{"vm", report->vm_uuid},
                          {"vm_name", report->vm_name},
                          {"point", report->point},
                          {"seconds", report->seconds},
                          {"notes", report->notes},
                          {"disks", nlohmann::json::array()},
                          {"skipped_disks", nlohmann::json::array()}};
    for (const auto& d : report->skipped) {
      out["skipped_disks"].push_back({{"vdi", d.vdi_uuid}, {"name", d.name}, {"reason", d.reason}});
    }
    for (const auto& d : report->disks) out["disks"].push_back(DiskJson(d));
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    for (const auto& d : report->skipped) {
      Info(g, "disk " + d.vdi_uuid + ": not backed up (" + d.reason + ")");
    }
    for (const auto& d : report->disks) {
      Info(g, "disk " + d.vdi_uuid + ": " + d.mode +
                  (d.reason.empty() ? "" : " (" + d.reason + ")") + ", read " +
                  HumanBytes(d.bytes_read) + ", stored " + HumanBytes(d.bytes_stored) +
                  (d.verify.empty() ? "" : ", verified"));
    }
    if (g.verbosity > 0) std::printf("%s %s\n", report->vm_uuid.c_str(), report->point.c_str());
  }
  return 0;
}

std::vector<std::string> Strings(const po::variables_map& vm, const char* name) {
  return vm.count(name) ? vm[name].as<std::vector<std::string>>() : std::vector<std::string>{};
}

// What the report says of one VM's disks: each disk's mode, and why it was
// read in full.
std::string DiskSummary(const backup::Report& r) {
  std::string out;
  for (const auto& d : r.disks) {
    if (!out.empty()) out += ", ";
    out += d.mode + (d.reason.empty() ? "" : " (" + d.reason + ")");
  }
  return out;
}

nlohmann::json ResultJson(const backup::VmResult& r) {
  nlohmann::json out = {{"vm", r.vm.uuid},
                        {"vm_name", r.vm.name},
                        {"result", r.status.ok() ? "ok" : "failed"},
                        {"error", r.status.ok() ? "" : r.status.message()},
                        {"point", r.report.point},
                        {"seconds", r.seconds},
                        {"notes", r.report.notes},
                        {"disks", nlohmann::json::array()},
                        {"skipped_disks", nlohmann::json::array()}};
  for (const auto& d : r.report.skipped) {
    out["skipped_disks"].push_back({{"vdi", d.vdi_uuid}, {"name", d.name}, {"reason", d.reason}});
  }
  for (const auto& d : r.report.disks) out["disks"].push_back(DiskJson(d));
  return out;
}

}  // namespace

void PrintResults(const std::vector<backup::VmResult>& results) {
  std::printf("%-20s %-36s %-6s %10s %10s %8s  %s\n", "VM", "UUID", "RESULT", "READ", "STORED",
              "SECONDS", "DISKS / ERROR");
  for (const auto& r : results) {
    auto [read, stored] = ReadAndStored(r.report);
    const bool ok = r.status.ok();
    std::printf("%-20s %-36s %-6s %10s %10s %8.1f  %s\n", Printable(r.vm.name).c_str(),
                r.vm.uuid.c_str(), ok ? "ok" : "failed", HumanBytes(read).c_str(),
                HumanBytes(stored).c_str(), r.seconds,
                ok ? DiskSummary(r.report).c_str() : r.status.message().c_str());
  }
}

nlohmann::json ResultsJson(const std::vector<backup::VmResult>& results) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : results) out.push_back(ResultJson(r));
  return out;
}

int ReportFailures(const std::vector<backup::VmResult>& results) {
  int failed = 0;
  for (const auto& r : results) {
    if (r.status.ok()) continue;
    ++failed;
    std::fprintf(stderr, "cbt-backup: VM %s (%s) failed: %s\n", Printable(r.vm.name).c_str(),
                 r.vm.uuid.c_str(), r.status.message().c_str());
  }
  return failed;
}

Result<std::vector<backup::VmInfo>> SelectForBackup(const Globals& g,
                                                    const backup::Selection& selection) {
  auto session = Login(g);
  if (!session.ok()) return session.status();
  auto vms = backup::SelectVms(**session, selection);
  (*session)->Logout();
  return vms;
}

void PrintSelection(const Globals& g, const std::vector<backup::VmInfo>& vms,
                    const std::string& what) {
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : vms) {
      out.push_back({{"vm", v.uuid},
                     {"vm_name", v.name},
                     {"power_state", v.power_state},
                     {"disks", v.disks},
                     {"tags", v.tags},
                     {"action", what}});
    }
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::printf("%-20s %-36s %-10s %5s  %s\n", "VM", "UUID", "POWER", "DISKS", "WOULD DO");
  for (const auto& v : vms) {
    std::printf("%-20s %-36s %-10s %5d  %s\n", Printable(v.name).c_str(), v.uuid.c_str(),
                v.power_state.c_str(), v.disks, what.c_str());
  }
}

PoolOutcome BackupVms(const Globals& g, const repo::Repository& repo,
                      const std::vector<backup::VmInfo>& vms, backup::PoolOptions options,
                      const std::string& job) {
  std::jthread nbd_preload;
  try {
    nbd_preload = std::jthread([] { nbd::Preload(); });
  } catch (const std::system_error&) {
    // No thread: libnbd loads at the first connection instead.
  }
  options.backup.require_tls = g.tls;
  options.backup.nbd_timeout = g.nbd_timeout;
  options.login = [&g] { return Login(g); };
  auto log_mu = std::make_shared<std::mutex>();
  options.backup.log = [&g, log_mu](const std::string& line) {
    std::lock_guard<std::mutex> lock(*log_mu);
    Info(g, line);
  };
  options.on_done = [&g, &repo, &job, log_mu](const backup::VmResult& r) {
    std::lock_guard<std::mutex> lock(*log_mu);
    Record(g, repo, r.vm.uuid, r.start_time, r.seconds, r.status, r.report, job);
  };
  Info(g, "backing up " + std::to_string(vms.size()) + " VMs, " + std::to_string(options.jobs) +
              " at a time");
  PoolOutcome out;
  out.started = static_cast<double>(std::time(nullptr));
  const double t0 = MonotonicSeconds();
  out.results = backup::RunPool(repo, vms, options);
  out.seconds = MonotonicSeconds() - t0;
  return out;
}

Status WriteRunMetrics(const std::string& path, const repo::Repository* repo,
                       const std::string& job, const PoolOutcome& outcome, uint64_t pruned_points,
                       bool failed) {
  backup::JobMetrics m;
  m.job = job;
  m.run_time = outcome.started;
  m.seconds = outcome.seconds;
  m.pruned_points = pruned_points;
  m.failed = failed;
  for (const auto& r : outcome.results) {
    backup::VmMetrics v;
    v.uuid = r.vm.uuid;
    v.name = r.vm.name;
    v.ok = r.status.ok();
    v.run_time = r.started ? r.start_time : outcome.started;
    v.seconds = r.seconds;
    std::tie(v.bytes_read, v.bytes_stored) = ReadAndStored(r.report);
    // The newest point is the last success, whichever run made it.
    Result<std::vector<std::string>> points = Status::NotFound("no repository");
    if (repo) points = repo->ListPoints(r.vm.uuid);
    if (points.ok() && !points->empty()) {
      if (auto t = repo::ParseTimestamp(points->back())) v.last_success = static_cast<double>(*t);
    }
    m.vms.push_back(v);
  }
  return backup::WriteMetricsFile(path, m);
}

namespace {

// The VMs of a run that failed before them (FailRun).
PoolOutcome FailedRunOutcome(const repo::Repository* repo, const std::string& job, double started,
                             double seconds, const Status& why) {
  PoolOutcome out;
  out.started = started;
  out.seconds = seconds;
  if (repo == nullptr) return out;
  auto vms = repo->ListVms();
  if (!vms.ok()) return out;
  for (const auto& v : *vms) {
    auto record = repo::ReadRunRecord(*repo, v);
    if (!record.ok() || !record->has_value()) continue;
    const auto& r = **record;
    if (r.last.job != job && !(r.failure && r.failure->job == job)) continue;
    backup::VmResult result;
    result.vm.uuid = v;
    if (auto points = repo->ListPoints(v); points.ok() && !points->empty()) {
      if (auto m = repo->ReadManifest(v, points->back()); m.ok()) result.vm.name = m->vm_name;
    }
    result.status = why;
    out.results.push_back(result);
  }
  return out;
}

}  // namespace

int FailRun(const Status& why, const std::string& metrics, const repo::Repository* repo,
            const std::string& job, double started, double seconds) {
  if (!metrics.empty()) {
    auto outcome = FailedRunOutcome(repo, job, started, seconds, why);
    if (auto st = WriteRunMetrics(metrics, repo, job, outcome, 0, true); !st.ok()) {
      std::fprintf(stderr, "cbt-backup: could not write metrics: %s\n", st.message().c_str());
    }
  }
  return Fail(why);
}

namespace {

// Several VMs (or a selection): each on a worker with its own session,
// one report at the end.
int RunMany(const Globals& g, const po::variables_map& vm) {
  backup::Selection sel;
  sel.vms = Strings(vm, "vm");
  sel.all = vm.count("all") > 0;
  sel.tags = Strings(vm, "tag");
  sel.exclude = Strings(vm, "exclude");
  if (sel.vms.empty() && !sel.all && sel.tags.empty()) {
    std::fprintf(stderr, "cbt-backup backup: --vm UUID|NAME, --all or --tag TAG is required\n");
    return kExitUsage;
  }
  backup::PoolOptions popt;
  popt.jobs = vm["jobs"].as<int>();
  popt.host_connections = vm["host-connections"].as<int>();
  popt.backup.connections = vm["connections"].as<int>();
  if (popt.jobs < 1 || popt.jobs > 64) {
    std::fprintf(stderr, "cbt-backup backup: --jobs must be 1..64\n");
    return kExitUsage;
  }
  if (popt.host_connections < 1 || popt.host_connections > 16) {
    std::fprintf(stderr, "cbt-backup backup: --host-connections must be 1..16\n");
    return kExitUsage;
  }
  if (popt.backup.connections < 1 || popt.backup.connections > 16) {
    std::fprintf(stderr, "cbt-backup backup: --connections must be 1..16\n");
    return kExitUsage;
  }
  popt.backup.full = vm.count("full") > 0;
  popt.backup.verify = vm.count("verify") > 0;
  const bool dry_run = vm.count("dry-run") > 0;
  const std::string metrics = vm.count("metrics-file") ? vm["metrics-file"].as<std::string>() : "";
  const double started = static_cast<double>(std::time(nullptr));
  const double t0 = MonotonicSeconds();
  // A run that fails before its VMs still says so to monitoring.
  auto fail_run = [&](const Status& st, const repo::Repository* r) {
    return FailRun(st, dry_run ? "" : metrics, r, "", started, MonotonicSeconds() - t0);
  };
  // A dry run neither needs nor creates the repository.
  Result<repo::Repository> repo = Status::NotFound("no repository opened");
  if (!dry_run) {
    repo = OpenRepo(g, /*create=*/true);
    if (!repo.ok()) return fail_run(repo.status(), nullptr);
  }
  auto vms = SelectForBackup(g, sel);
  if (!vms.ok()) return fail_run(vms.status(), repo.ok() ? &*repo : nullptr);
  if (dry_run) {
    PrintSelection(g, *vms,
                   std::string(popt.backup.full ? "full" : "full or incremental") + " backup" +
                       (popt.backup.verify ? ", verified" : ""));
    return 0;
  }
  auto outcome = BackupVms(g, *repo, *vms, popt, /*job=*/"");
  if (g.json) {
    std::cout << ResultsJson(outcome.results)
                     .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    PrintResults(outcome.results);
  }
  std::fflush(stdout);
  int rc = ReportFailures(outcome.results) == 0 ? 0 : kExitFailure;
  if (!metrics.empty()) {
    if (auto st = WriteRunMetrics(metrics, &*repo, "", outcome, 0, false); !st.ok()) {
      std::fprintf(stderr, "cbt-backup: could not write metrics: %s\n", st.message().c_str());
      rc = kExitFailure;
    }
  }
  return rc;
}

int Run(const Globals& g, const po::variables_map& vm) {
  const auto vms = Strings(vm, "vm");
  const bool single = vms.size() == 1 && !vm.count("all") && !vm.count("tag") &&
                      !vm.count("exclude") && !vm.count("dry-run") && !vm.count("metrics-file") &&
                      vm["jobs"].defaulted() && vm["host-connections"].defaulted();
  return single ? RunOne(g, vm, vms[0]) : RunMany(g, vm);
}

}  // namespace

Command BackupCommand() {
  return {
      "backup", "back up VMs (full the first time, then changed blocks only)",
      "(--vm UUID|NAME... | --all | --tag TAG...) [--exclude UUID|NAME]... [--jobs N]\n"
      "       [--host-connections N] [--full] [--verify] [--dry-run] [--metrics-file FILE]",
      [](po::options_description& d, po::positional_options_description&) {
        d.add_options()("vm", po::value<std::vector<std::string>>(),
                        "VM UUID or name (repeatable)")(
            "all", "every VM of the pool (not templates, snapshots, control domains)")(
            "tag", po::value<std::vector<std::string>>(), "the VMs carrying this tag (repeatable)")(
            "exclude", po::value<std::vector<std::string>>(),
            "leave out this VM, UUID or name (repeatable)")(
            "jobs", po::value<int>()->default_value(1), "VMs backed up at once")(
            "host-connections", po::value<int>()->default_value(16),
            "NBD connections per host over all VMs at once (1..16)")(
            "dry-run", "list the selected VMs and what would be done, change nothing")(
            "full", "read every disk in full (start new chains)")(
            "verify", "compare each disk's MD5 with the server's VDI.checksum")(
            "connections", po::value<int>()->default_value(4), "NBD connections per disk (1..16)")(
            "metrics-file", po::value<std::string>(),
            "write a Prometheus textfile-collector file of this run");
      },
      Run};
}

}  // namespace cbt::cli
