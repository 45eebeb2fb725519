// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "image/verify.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace cbt::cli {

namespace {

std::string Describe(const image::VerifyProblem& p) {
  // Damage to the block store's own files (an index) belongs to no point.
  if (p.vm.empty()) return "block store: " + p.message;
  std::string s = "VM " + p.vm + " point " + p.point;
  if (!p.disk.empty()) s += " disk " + p.disk;
  if (p.offset >= 0) s += " offset " + std::to_string(p.offset);
  return s + ": " + p.message;
}

int Run(const Globals& g, const po::variables_map& vm) {
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  WarnInterruptedDeletes(*repo);
  std::string vm_uuid = vm.count("vm") ? vm["vm"].as<std::string>() : "";
  std::string point = vm.count("point") ? vm["point"].as<std::string>() : "";
  if (!point.empty() && vm_uuid.empty()) {
    std::fprintf(stderr, "cbt-backup verify: --point needs --vm\n");
    return kExitUsage;
  }
  image::VerifyReport report;
  Status s =
      image::VerifyRepository(*repo, vm_uuid, point, &report, [&g](const image::VerifyProblem& p) {
        if (!g.json) {
          std::fprintf(stderr, "damaged: %s\n", Describe(p).c_str());
        }
      });
  if (!s.ok()) return Fail(s);
  if (g.json) {
    nlohmann::json out = {{"points", report.points},
                          {"disks", report.disks},
                          {"blocks_checked", report.blocks_checked},
                          {"bytes_checked", report.bytes_checked},
                          {"ok", report.problems.empty()},
                          {"problems", nlohmann::json::array()}};
    if (report.store_checked) {
      out["store"] = {{"stored_blocks", report.stored_blocks},
                      {"stored_bytes", report.stored_bytes},
                      {"unreferenced_blocks", report.unreferenced_blocks},
                      {"unreferenced_bytes", report.unreferenced_bytes}};
    }
    for (const auto& p : report.problems) {
      out["problems"].push_back({{"vm", p.vm},
                                 {"point", p.point},
                                 {"disk", p.disk},
                                 {"offset", p.offset},
                                 {"message", p.message}});
    }
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (report.problems.empty()) {
    Info(g, "verified " + std::to_string(report.points) + " point(s), " +
                std::to_string(report.disks) + " disk(s), " +
                std::to_string(report.blocks_checked) + " blocks (" +
                HumanBytes(report.bytes_checked) + "): no damage");
  }
  if (!g.json && report.store_checked) {
    Info(g, "store: " + std::to_string(report.stored_blocks) + " stored block(s) referenced (" +
                HumanBytes(report.stored_bytes) + "), " +
                std::to_string(report.unreferenced_blocks) + " unreferenced (" +
                HumanBytes(report.unreferenced_bytes) + ", released by the next gc)");
  }
  if (!report.problems.empty()) {
    std::fprintf(stderr, "cbt-backup: verify found %zu problem(s); the first: %s\n",
                 report.problems.size(), Describe(report.problems.front()).c_str());
    return kExitFailure;
  }
  return 0;
}

}  // namespace

Command VerifyCommand() {
  return {"verify", "re-read every stored block and check it against its checksum",
          "[--vm UUID] [--point TIMESTAMP] [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "only this VM")(
                "point", po::value<std::string>(), "only this point (needs --vm)");
          },
          Run};
}

}  // namespace cbt::cli
