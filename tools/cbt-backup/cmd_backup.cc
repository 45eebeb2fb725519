// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "backup/backup.h"
#include "nbd/nbd_reader.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <system_error>
#include <thread>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("backup", vm, {{"vm", "--vm UUID|NAME"}})) return kExitUsage;
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
  opt.vm = vm["vm"].as<std::string>();
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
    for (const auto& d : report->disks) {
      out["disks"].push_back({{"vdi", d.vdi_uuid},
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
                              {"verify", d.verify.empty() ? "skipped" : d.verify}});
    }
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

}  // namespace

Command BackupCommand() {
  return {"backup", "back up a VM (full the first time, then changed blocks only)",
          "--vm UUID|NAME [--full] [--verify]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "VM UUID or name")(
                "full", "read every disk in full (start new chains)")(
                "verify", "compare each disk's MD5 with the server's VDI.checksum")(
                "connections", po::value<int>()->default_value(4),
                "NBD connections per disk (1..16)");
          },
          Run};
}

}  // namespace cbt::cli
