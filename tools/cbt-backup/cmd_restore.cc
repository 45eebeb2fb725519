// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "restore/restore.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("restore", vm, {{"vm", "--vm"}, {"point", "--point"}})) return kExitUsage;
  restore::Options opt;
  opt.vm = vm["vm"].as<std::string>();
  opt.point = vm["point"].as<std::string>();
  auto get = [&vm](const char* name, std::string* out) {
    if (vm.count(name)) *out = vm[name].as<std::string>();
  };
  get("sr", &opt.sr);
  get("host", &opt.host);
  get("disk", &opt.disk);
  get("onto-vdi", &opt.onto_vdi);
  get("from-file", &opt.from_file);
  opt.format = vm["format"].as<std::string>();
  opt.verify = vm.count("verify") > 0;
  if (opt.format != "vhd" && opt.format != "raw") {
    std::fprintf(stderr, "cbt-backup restore: --format must be vhd or raw\n");
    return kExitUsage;
  }
  if (opt.onto_vdi.empty() && opt.sr.empty()) {
    std::fprintf(stderr, "cbt-backup restore: --sr SR-UUID is required (or --onto-vdi UUID)\n");
    return kExitUsage;
  }
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  WarnInterruptedDeletes(*repo);
  auto session = Login(g);
  if (!session.ok()) return Fail(session.status());
  opt.log = [&g](const std::string& line) { Info(g, line); };
  ProgressBar bar(g);
  opt.progress = [&bar](const std::string& vdi, uint64_t done, uint64_t total) {
    bar.Update("disk " + vdi.substr(0, 8), done, total);
  };
  auto report = restore::Run(**session, *repo, opt);
  bar.Finish();
  if (!report.ok()) return Fail(report.status());
  if (g.json) {
    nlohmann::json out = {{"vm", report->new_vm_uuid},
                          {"seconds", report->seconds},
                          {"notes", report->notes},
                          {"disks", nlohmann::json::array()}};
    for (const auto& d : report->disks) {
      out["disks"].push_back({{"vdi", d.vdi_uuid},
                              {"target_vdi", d.target_uuid},
                              {"mode", d.mode},
                              {"reason", d.reason},
                              {"bytes_sent", d.bytes_sent},
                              {"blocks_sent", d.blocks_sent},
                              {"seconds", d.seconds},
                              {"upload_seconds", d.upload_seconds},
                              {"verify", d.verify.empty() ? "skipped" : d.verify}});
    }
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (const auto& d : report->disks) {
    Info(g, "disk " + d.vdi_uuid + " -> VDI " + d.target_uuid + ": " + d.mode + ", sent " +
                HumanBytes(d.bytes_sent) + (d.verify == "ok" ? ", verified" : ""));
  }
  if (!report->new_vm_uuid.empty()) {
    std::printf("%s\n", report->new_vm_uuid.c_str());
  } else {
    for (const auto& d : report->disks) std::printf("%s\n", d.target_uuid.c_str());
  }
  return 0;
}

}  // namespace

Command RestoreCommand() {
  return {"restore",
          "stream a point back to XenServer (whole VM, one disk, or over an existing VDI)",
          "--vm UUID --point TIMESTAMP --sr SR-UUID [--host UUID] [--disk VDI-UUID] "
          "[--onto-vdi UUID] [--from-file PATH] [--format vhd|raw] [--verify]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "VM UUID of the point")(
                "point", po::value<std::string>(), "point (timestamp)")(
                "sr", po::value<std::string>(), "SR for the new VDIs")(
                "host", po::value<std::string>(), "host to stream to (default: the master)")(
                "disk", po::value<std::string>(), "restore only this disk (original VDI UUID)")(
                "onto-vdi", po::value<std::string>(), "write over this existing VDI")(
                "from-file", po::value<std::string>(),
                "send this raw image (e.g. under a cbtfs mount) instead of the point")(
                "format", po::value<std::string>()->default_value("vhd"),
                "vhd (holes are not sent) or raw")(
                "verify", "compare each restored disk's MD5 with the point's");
          },
          Run};
}

}  // namespace cbt::cli
