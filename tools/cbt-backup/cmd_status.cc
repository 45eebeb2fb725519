// SPDX-License-Identifier: Apache-2.0
//
// status: per VM of the repository, its newest point and that point's age,
// and the last backup attempt and last failure from the VM's run record
// (repo/run_record.h).  With --max-age it is also a check for scripts and
// monitoring: exit 1 when a VM has no point that recent.
#include "cli.h"

#include "repo/layout.h"
#include "repo/run_record.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <iostream>

namespace cbt::cli {

namespace {

std::string Age(double seconds) {
  if (seconds < 0) seconds = 0;
  const auto s = static_cast<long long>(seconds);
  char buf[32];
  if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm", s / 60);
  } else if (s < 2 * 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  }
  return buf;
}

nlohmann::json AttemptJson(const repo::RunAttempt& a) {
  return {{"time", a.time},   {"result", a.ok ? "ok" : "failed"},
          {"error", a.error}, {"point", a.point},
          {"job", a.job},     {"seconds", a.seconds}};
}

int Run(const Globals& g, const po::variables_map& vm) {
  double max_age = -1;
  if (vm.count("max-age")) {
    max_age = vm["max-age"].as<double>();
    if (!(max_age > 0)) {
      std::fprintf(stderr, "cbt-backup status: --max-age must be a positive number of hours\n");
      return kExitUsage;
    }
  }
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  std::vector<std::string> vms;
  if (vm.count("vm")) {
    vms = vm["vm"].as<std::vector<std::string>>();
    for (const auto& v : vms) {
      if (!repo::IsUuid(v)) {
        std::fprintf(stderr, "cbt-backup status: '%s' is not a VM UUID\n", Printable(v).c_str());
        return kExitUsage;
      }
    }
  } else {
    auto all = repo->ListVms();
    if (!all.ok()) return Fail(all.status());
    vms = *all;
  }
  const double now = static_cast<double>(std::time(nullptr));
  nlohmann::json out = nlohmann::json::array();
  std::vector<std::string> stale;
  for (const auto& v : vms) {
    nlohmann::json j = {{"vm", v},
                        {"vm_name", ""},
                        {"points", 0},
                        {"newest_point", nullptr},
                        {"age_seconds", nullptr},
                        {"last_run", nullptr},
                        {"last_failure", nullptr}};
    auto points = repo->ListPoints(v);
    if (!points.ok()) return Fail(points.status());
    j["points"] = points->size();
    double age = -1;
    if (!points->empty()) {
      j["newest_point"] = points->back();
      if (auto t = repo::ParseTimestamp(points->back())) {
        age = now - static_cast<double>(*t);
        j["age_seconds"] = age;
      }
      if (auto m = repo->ReadManifest(v, points->back()); m.ok()) j["vm_name"] = m->vm_name;
    }
    auto record = repo::ReadRunRecord(*repo, v);
    if (!record.ok()) {
      // Advisory only: a damaged record is reported, the status goes on.
      std::fprintf(stderr, "cbt-backup: %s\n", record.status().message().c_str());
    } else if (record->has_value()) {
      j["last_run"] = AttemptJson((*record)->last);
      if ((*record)->failure) j["last_failure"] = AttemptJson(*(*record)->failure);
    }
    if (max_age > 0 && (age < 0 || age > max_age * 3600)) {
      j["stale"] = true;
      stale.push_back(v);
    }
    out.push_back(j);
  }
  if (g.json) {
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (out.empty()) {
    std::printf("no VMs in %s\n", repo->path().c_str());
  } else {
    std::printf("%-36s %-20s %-16s %-8s %-6s %-16s %s\n", "VM", "NAME", "NEWEST POINT", "AGE",
                "LAST", "LAST RUN", "LAST FAILURE");
    for (const auto& j : out) {
      const bool has_point = !j["newest_point"].is_null();
      const auto& last = j["last_run"];
      const auto& failure = j["last_failure"];
      std::string failure_text = "-";
      if (!failure.is_null()) {
        failure_text = failure["time"].get<std::string>() + " " +
                       Printable(failure["error"].get<std::string>());
      }
      std::printf("%-36s %-20s %-16s %-8s %-6s %-16s %s\n", j["vm"].get<std::string>().c_str(),
                  Printable(j["vm_name"].get<std::string>()).c_str(),
                  has_point ? j["newest_point"].get<std::string>().c_str() : "-",
                  j["age_seconds"].is_null() ? "-" : Age(j["age_seconds"].get<double>()).c_str(),
                  last.is_null() ? "-" : last["result"].get<std::string>().c_str(),
                  last.is_null() ? "-" : last["time"].get<std::string>().c_str(),
                  failure_text.c_str());
    }
  }
  std::fflush(stdout);
  for (const auto& v : stale) {
    std::fprintf(stderr, "cbt-backup: VM %s has no point newer than %g hours\n", v.c_str(),
                 max_age);
  }
  return stale.empty() ? 0 : kExitFailure;
}

}  // namespace

Command StatusCommand() {
  return {"status", "per VM: the newest point, its age, the last run and the last failure",
          "[--vm UUID]... [--max-age HOURS] [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::vector<std::string>>(),
                            "only this VM (repeatable)")(
                "max-age", po::value<double>(),
                "exit 1 if a VM's newest point is older than this many hours");
          },
          Run};
}

}  // namespace cbt::cli
