// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "repo/gc.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  WarnInterruptedDeletes(*repo);
  std::vector<std::string> vms;
  if (vm.count("vm")) {
    vms.push_back(vm["vm"].as<std::string>());
  } else {
    auto all = repo->ListVms();
    if (!all.ok()) return Fail(all.status());
    vms = *all;
  }
  nlohmann::json out = {{"repository", repo->location()}, {"vms", nlohmann::json::array()}};
  for (const auto& v : vms) {
    auto points = repo->ListPoints(v);
    if (!points.ok()) return Fail(points.status());
    nlohmann::json jv = {{"vm", v}, {"name", ""}, {"points", nlohmann::json::array()}};
    for (const auto& p : *points) {
      auto m = repo->ReadManifest(v, p);
      if (!m.ok()) return Fail(m.status());
      if (!m->vm_name.empty()) jv["name"] = m->vm_name;
      nlohmann::json jp = {{"point", p}, {"source", m->source}, {"disks", nlohmann::json::array()}};
      for (const auto& d : m->disks) {
        auto chain = repo->DiskChain(v, p, d.vdi_uuid);
        jp["disks"].push_back(
            {{"vdi", d.vdi_uuid},
             {"name", d.name},
             {"kind", d.base ? "base" : "overlay"},
             {"parent_point", d.base ? nlohmann::json(nullptr) : nlohmann::json(d.parent_point)},
             {"virtual_size", d.virtual_size},
             {"stored_bytes", d.stored_bytes},
             {"data_blocks", d.data_blocks},
             {"zero_blocks", d.zero_blocks},
             {"chain_depth", chain.ok() ? chain->size() : 0},
             {"reason", d.reason}});
      }
      jv["points"].push_back(jp);
    }
    out["vms"].push_back(jv);
  }
  // What the repository takes on disk, all VMs together: blocks shared by
  // points and VMs are counted once here.
  auto usage = repo::MeasureUsage(*repo);
  if (!usage.ok()) return Fail(usage.status());
  out["stored"] = {{"packs", usage->packs},
                   {"indexes", usage->indexes},
                   {"disk_files", usage->disk_files},
                   {"total", usage->total()}};
  if (g.json) {
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  if (out["vms"].empty()) std::printf("no backups in %s\n", repo->path().c_str());
  for (const auto& jv : out["vms"]) {
    // A name from the server: escaped, so it cannot drive the terminal or
    // forge a line.
    std::string name = Printable(jv["name"].get<std::string>());
    std::printf("VM %s%s\n", jv["vm"].get<std::string>().c_str(),
                name.empty() ? "" : ("  (" + name + ")").c_str());
    std::printf("  %-17s %-36s %10s %10s %5s  %s\n", "POINT", "DISK", "VIRTUAL", "STORED", "DEPTH",
                "KIND");
    for (const auto& jp : jv["points"]) {
      if (jp["disks"].empty()) {
        std::printf("  %-17s (no disks)\n", jp["point"].get<std::string>().c_str());
      }
      for (const auto& jd : jp["disks"]) {
        std::printf("  %-17s %-36s %10s %10s %5zu  %s\n", jp["point"].get<std::string>().c_str(),
                    jd["vdi"].get<std::string>().c_str(),
                    HumanBytes(jd["virtual_size"].get<uint64_t>()).c_str(),
                    HumanBytes(jd["stored_bytes"].get<uint64_t>()).c_str(),
                    jd["chain_depth"].get<size_t>(), jd["kind"].get<std::string>().c_str());
      }
    }
  }
  std::printf("stored in the repository: %s (packs %s, indexes %s, disk files %s)\n",
              HumanBytes(usage->total()).c_str(), HumanBytes(usage->packs).c_str(),
              HumanBytes(usage->indexes).c_str(), HumanBytes(usage->disk_files).c_str());
  return 0;
}

}  // namespace

Command ListCommand() {
  return {"list", "list VMs, points and disks in the repository", "[--vm UUID] [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "only this VM");
          },
          Run};
}

}  // namespace cbt::cli
