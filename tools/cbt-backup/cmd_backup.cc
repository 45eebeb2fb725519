// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "backup/backup.h"
#include "backup/pool_run.h"
#include "nbd/nbd_reader.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <mutex>
#include <system_error>
#include <thread>
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
  auto report = backup::Run(**session, *repo, opt);
  bar.Finish();
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

void PrintTable(const std::vector<backup::VmResult>& results) {
  std::printf("%-20s %-36s %-6s %10s %10s %8s  %s\n", "VM", "UUID", "RESULT", "READ", "STORED",
              "SECONDS", "DISKS / ERROR");
  for (const auto& r : results) {
    uint64_t read = 0, stored = 0;
    for (const auto& d : r.report.disks) {
      read += d.bytes_read;
      stored += d.bytes_stored;
    }
    const bool ok = r.status.ok();
    std::printf("%-20s %-36s %-6s %10s %10s %8.1f  %s\n", Printable(r.vm.name).c_str(),
                r.vm.uuid.c_str(), ok ? "ok" : "failed", HumanBytes(read).c_str(),
                HumanBytes(stored).c_str(), r.seconds,
                ok ? DiskSummary(r.report).c_str() : r.status.message().c_str());
  }
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
  const bool dry_run = vm.count("dry-run") > 0;
  // A dry run neither needs nor creates the repository.
  Result<repo::Repository> repo = Status::NotFound("no repository opened");
  if (!dry_run) {
    repo = OpenRepo(g, /*create=*/true);
    if (!repo.ok()) return Fail(repo.status());
  }
  auto session = Login(g);
  if (!session.ok()) return Fail(session.status());
  auto vms = backup::SelectVms(**session, sel);
  if (!vms.ok()) return Fail(vms.status());
  if (dry_run) {
    const std::string what = std::string(vm.count("full") ? "full" : "full or incremental") +
                             " backup" + (vm.count("verify") ? ", verified" : "");
    if (g.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& v : *vms) {
        out.push_back({{"vm", v.uuid},
                       {"vm_name", v.name},
                       {"power_state", v.power_state},
                       {"disks", v.disks},
                       {"tags", v.tags},
                       {"action", what}});
      }
      std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::printf("%-20s %-36s %-10s %5s  %s\n", "VM", "UUID", "POWER", "DISKS", "WOULD DO");
      for (const auto& v : *vms) {
        std::printf("%-20s %-36s %-10s %5d  %s\n", Printable(v.name).c_str(), v.uuid.c_str(),
                    v.power_state.c_str(), v.disks, what.c_str());
      }
    }
    return 0;
  }
  // The selection's session is done; each worker logs in on its own.
  (*session)->Logout();
  session->reset();
  std::jthread nbd_preload;
  try {
    nbd_preload = std::jthread([] { nbd::Preload(); });
  } catch (const std::system_error&) {
    // No thread: libnbd loads at the first connection instead.
  }
  popt.backup.full = vm.count("full") > 0;
  popt.backup.verify = vm.count("verify") > 0;
  popt.backup.require_tls = g.tls;
  popt.backup.nbd_timeout = g.nbd_timeout;
  std::mutex log_mu;
  popt.login = [&g] { return Login(g); };
  const std::vector<backup::VmInfo>& list = *vms;
  Info(g, "backing up " + std::to_string(list.size()) + " VMs, " + std::to_string(popt.jobs) +
              " at a time");
  popt.backup.log = [&g, &log_mu](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    Info(g, line);
  };
  auto results = backup::RunPool(*repo, list, popt);
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : results) out.push_back(ResultJson(r));
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    PrintTable(results);
  }
  std::fflush(stdout);
  int failed = 0;
  for (const auto& r : results) {
    if (r.status.ok()) continue;
    ++failed;
    std::fprintf(stderr, "cbt-backup: VM %s (%s) failed: %s\n", Printable(r.vm.name).c_str(),
                 r.vm.uuid.c_str(), r.status.message().c_str());
  }
  return failed == 0 ? 0 : kExitFailure;
}

int Run(const Globals& g, const po::variables_map& vm) {
  const auto vms = Strings(vm, "vm");
  const bool single = vms.size() == 1 && !vm.count("all") && !vm.count("tag") &&
                      !vm.count("exclude") && !vm.count("dry-run") && vm["jobs"].defaulted() &&
                      vm["host-connections"].defaulted();
  return single ? RunOne(g, vm, vms[0]) : RunMany(g, vm);
}

}  // namespace

Command BackupCommand() {
  return {
      "backup", "back up VMs (full the first time, then changed blocks only)",
      "(--vm UUID|NAME... | --all | --tag TAG...) [--exclude UUID|NAME]... [--jobs N]\n"
      "       [--host-connections N] [--full] [--verify] [--dry-run]",
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
            "connections", po::value<int>()->default_value(4), "NBD connections per disk (1..16)");
      },
      Run};
}

}  // namespace cbt::cli
