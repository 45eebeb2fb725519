// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "local/copy_points.h"
#include "repo/layout.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  if (!vm.count("from") || !vm.count("to")) {
    std::fprintf(stderr, "cbt-backup copy: --from REPO and --to REPO are required\n");
    return kExitUsage;
  }
  const std::string from_arg = vm["from"].as<std::string>();
  const std::string to_arg = vm["to"].as<std::string>();
  auto from = repo::Repository::OpenAny(from_arg, /*create=*/false, g.ca_cert);
  if (!from.ok()) return Fail(from.status());
  auto to = repo::Repository::OpenAny(to_arg, /*create=*/true, g.ca_cert);
  if (!to.ok()) return Fail(to.status());
  if (from->path() == to->path()) {
    return Fail(Status::InvalidArgument("--from and --to name the same repository"));
  }
  std::vector<std::string> vms;
  if (vm.count("vm")) {
    vms = vm["vm"].as<std::vector<std::string>>();
    for (const auto& v : vms) {
      if (!repo::IsUuid(v)) return Fail(Status::InvalidArgument("'" + v + "' is not a VM UUID"));
    }
  } else {
    auto all = from->ListVms();
    if (!all.ok()) return Fail(all.status());
    vms = *all;
  }
  nlohmann::json out = {
      {"from", from->location()}, {"to", to->location()}, {"vms", nlohmann::json::array()}};
  bool failed = false;
  for (const auto& v : vms) {
    auto st = local::CopyVm(*from, *to, v, [&](const std::string& p) {
      if (!g.json && g.verbosity > 1) std::printf("VM %s: copied point %s\n", v.c_str(), p.c_str());
    });
    if (!st.ok()) {
      std::fprintf(stderr, "cbt-backup: VM %s: %s\n", v.c_str(), st.status().message().c_str());
      out["vms"].push_back({{"vm", v}, {"error", st.status().message()}});
      failed = true;
      continue;
    }
    out["vms"].push_back({{"vm", v},
                          {"copied", st->copied},
                          {"present", st->present.size()},
                          {"blocks_sent", st->blocks_sent},
                          {"blocks_referred", st->blocks_referred},
                          {"bytes_stored", st->bytes_stored}});
    Info(g, "VM " + v + ": " + std::to_string(st->copied.size()) + " point(s) copied, " +
                std::to_string(st->present.size()) + " already there; " +
                std::to_string(st->blocks_sent) + " block(s) sent (" +
                HumanBytes(st->bytes_stored) + " stored), " + std::to_string(st->blocks_referred) +
                " already in the target");
  }
  if (g.json) std::cout << out.dump(2) << "\n";
  return failed ? 1 : 0;
}

}  // namespace

Command CopyCommand() {
  return {"copy",
          "copy the points another repository lacks (disk or s3:// either way), sending only "
          "the blocks it does not hold",
          "--from REPO --to REPO [--vm UUID]... [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("from", po::value<std::string>(), "the repository to copy from")(
                "to", po::value<std::string>(), "the repository to copy to (created if missing)")(
                "vm", po::value<std::vector<std::string>>(), "only these VMs");
          },
          Run};
}

}  // namespace cbt::cli
