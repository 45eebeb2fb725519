// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "local/import_legacy.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("import-legacy", vm, {{"source", "SOURCE"}})) return kExitUsage;
  auto repo = OpenRepo(g, /*create=*/true);
  if (!repo.ok()) return Fail(repo.status());
  local::ImportOptions opts;
  if (vm.count("vm")) opts.only_vm = vm["vm"].as<std::string>();
  opts.log = [&g](const std::string& line) { Info(g, line); };
  std::vector<local::ImportedPoint> points;
  Status s = local::ImportLegacy(*repo, vm["source"].as<std::string>(), opts, &points);
  size_t imported = 0, skipped = 0;
  for (const auto& p : points) (p.skipped ? skipped : imported)++;
  if (g.json) {
    nlohmann::json out = {
        {"imported", imported}, {"skipped", skipped}, {"points", nlohmann::json::array()}};
    for (const auto& p : points) {
      nlohmann::json jp = {{"vm", p.vm}, {"point", p.point}, {"skipped", p.skipped}};
      if (p.skipped) jp["note"] = p.note;
      for (const auto& d : p.disks) {
        jp["disks"].push_back({{"vdi", d.vdi_uuid},
                               {"kind", d.base ? "base" : "overlay"},
                               {"virtual_size", d.virtual_size},
                               {"data_blocks", d.data_blocks},
                               {"zero_blocks", d.zero_blocks},
                               {"stored_bytes", d.stored_bytes}});
      }
      out["points"].push_back(jp);
    }
    if (!s.ok()) out["error"] = s.message();
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    Info(g,
         std::to_string(imported) + " point(s) imported, " + std::to_string(skipped) + " skipped");
  }
  if (!s.ok()) return Fail(s);
  return 0;
}

}  // namespace

Command ImportLegacyCommand() {
  return {"import-legacy", "adopt a repository written by backup.py (SOURCE is only read)",
          "SOURCE [--vm UUID]",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("source", po::value<std::string>(), "legacy repository directory")(
                "vm", po::value<std::string>(), "import only this VM");
            p.add("source", 1);
          },
          Run};
}

}  // namespace cbt::cli
