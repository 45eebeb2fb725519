// SPDX-License-Identifier: Apache-2.0
//
// prune (keep policy) and delete (one point).  Both end in
// repo::DeletePoints; with a server, the CBT metadata VDIs of the deleted
// points are destroyed afterwards, since no later backup starts from them.
#include "cli.h"

#include "backup/server_prune.h"
#include "repo/gc.h"
#include "repo/prune.h"
#include "util/block_codec.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <stdexcept>

namespace cbt::cli {

std::vector<std::string> ReleaseSnapshots(const Globals& g, const std::vector<std::string>& uuids) {
  if (g.server.empty() || uuids.empty()) return {};
  auto session = Login(g);
  if (!session.ok()) {
    return {"could not log in to destroy CBT metadata on the server: " +
            session.status().message()};
  }
  return backup::DestroyCbtMetadata(**session, uuids);
}

namespace {

nlohmann::json StatsJson(const repo::DeleteStats& st) {
  return {{"deleted", st.deleted},
          {"layers_moved", st.layers_moved},
          {"blocks_released", st.blocks_released},
          {"bytes_released", st.bytes_released}};
}

nlohmann::json GcJson(const repo::GcStats& st) {
  return {{"skipped", st.skipped},
          {"live_blocks", st.live_blocks},
          {"live_bytes", st.live_bytes},
          {"blocks_released", st.blocks_released},
          {"packs_removed", st.packs_removed},
          {"indexes_replaced", st.indexes_replaced},
          {"bytes_freed", st.bytes_freed},
          {"packs_retained", st.packs_retained}};
}

std::string GcText(const repo::GcStats& st) {
  if (st.skipped) {
    return "gc: skipped, other commands are using the repository" +
           (st.skipped_because.empty() ? std::string() : " (" + st.skipped_because + ")") +
           "; the next prune or gc releases the space";
  }
  return "gc: " + std::to_string(st.blocks_released) + " stored block(s) released, " +
         std::to_string(st.packs_removed) + " pack(s) removed, " + HumanBytes(st.bytes_freed) +
         " freed; " + std::to_string(st.live_blocks) + " block(s) in use (" +
         HumanBytes(st.live_bytes) + ")" +
         (st.packs_retained == 0
              ? std::string()
              : "; " + std::to_string(st.packs_retained) +
                    " unused pack(s) kept until their Object Lock retention ends");
}

}  // namespace

nlohmann::json CollectAfterDelete(const Globals& g, const repo::Repository& repo, bool* failed) {
  auto st = repo::CollectGarbage(repo);
  if (!st.ok()) {
    std::fprintf(stderr, "cbt-backup: gc failed: %s\n", st.status().message().c_str());
    *failed = true;
    return {{"error", st.status().message()}};
  }
  if (!g.json) Info(g, GcText(*st));
  return GcJson(*st);
}

PruneOutcome PruneVm(const Globals& g, const repo::Repository& repo, const std::string& v,
                     const repo::KeepPolicy& policy, bool dry_run, bool list_points) {
  PruneOutcome out;
  out.json = {{"vm", v}, {"keep", nlohmann::json::array()}, {"remove", nlohmann::json::array()}};
  auto lock = repo::VmLock::Acquire(repo, v, "prune");
  if (!lock.ok()) {
    out.status = lock.status();
    return out;
  }
  auto points = repo.ListPoints(v);
  if (!points.ok()) {
    out.status = points.status();
    return out;
  }
  auto decisions = repo::ApplyKeepPolicy(*points, policy);
  if (repo.remote() && repo.remote()->retention_days() > 0) {
    // Object Lock: a point still retained is kept, saying until when.
    for (auto& d : decisions) {
      if (d.keep()) continue;
      auto until = repo.remote()->RetainedUntil(v, d.point);
      if (!until.ok()) {
        out.status = until.status();
        return out;
      }
      if (!until->empty()) d.reasons.push_back("retained by Object Lock until " + *until);
    }
  }
  out.decided = true;
  std::vector<std::string> doomed;
  for (const auto& d : decisions) {
    if (d.keep()) {
      out.json["keep"].push_back({{"point", d.point}, {"reasons", d.reasons}});
    } else {
      out.json["remove"].push_back(d.point);
      doomed.push_back(d.point);
    }
  }
  out.removed = doomed.size();
  if (!g.json && g.verbosity > 0) {
    std::printf("VM %s: keeping %zu point(s), %s %zu\n", v.c_str(),
                decisions.size() - doomed.size(), dry_run ? "would remove" : "removing",
                doomed.size());
    for (const auto& d : decisions) {
      if (!list_points) break;  // the summary line only
      std::string why;
      for (const auto& r : d.reasons) why += (why.empty() ? "" : ", ") + r;
      std::printf("  %s  %s%s\n", d.keep() ? "keep  " : "remove", d.point.c_str(),
                  why.empty() ? "" : ("  (" + why + ")").c_str());
    }
  }
  if (dry_run || doomed.empty()) return out;
  auto st = repo::DeletePoints(repo, *lock, v, doomed);
  if (!st.ok()) {
    out.status = st.status();
    out.removed = 0;
    return out;
  }
  out.json["result"] = StatsJson(*st);
  out.removed = st->deleted.size();
  out.released = st->released_snapshots;
  Info(g, "VM " + v + ": removed " + std::to_string(st->deleted.size()) + " point(s), " +
              std::to_string(st->layers_moved) + " data file(s) handed to later points, " +
              HumanBytes(st->bytes_released) + " released");
  return out;
}

namespace {

int RunPrune(const Globals& g, const po::variables_map& vm) {
  const bool all = vm.count("all") > 0;
  if (all == (vm.count("vm") > 0)) {
    std::fprintf(stderr, "cbt-backup prune: give either --vm UUID or --all\n");
    return kExitUsage;
  }
  repo::KeepPolicy policy;
  policy.last = vm["keep-last"].as<int>();
  policy.hourly = vm["keep-hourly"].as<int>();
  policy.daily = vm["keep-daily"].as<int>();
  policy.weekly = vm["keep-weekly"].as<int>();
  policy.monthly = vm["keep-monthly"].as<int>();
  policy.yearly = vm["keep-yearly"].as<int>();
  for (int n :
       {policy.last, policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly}) {
    if (n < 0) {
      std::fprintf(stderr, "cbt-backup prune: --keep-* values must not be negative\n");
      return kExitUsage;
    }
  }
  if (policy.empty()) {
    std::fprintf(stderr,
                 "cbt-backup prune: no --keep-* rule given; refusing to remove every point but "
                 "the newest (use delete for single points)\n");
    return kExitUsage;
  }
  const bool dry_run = vm.count("dry-run") > 0;
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  std::vector<std::string> vms;
  if (all) {
    auto list = repo->ListVms();
    if (!list.ok()) return Fail(list.status());
    vms = *list;
  } else {
    vms.push_back(vm["vm"].as<std::string>());
  }
  nlohmann::json out = {{"dry_run", dry_run}, {"vms", nlohmann::json::array()}};
  std::vector<std::string> released;
  int rc = 0;
  for (const auto& v : vms) {
    auto pruned = PruneVm(g, *repo, v, policy, dry_run);
    // Locked, or the points could not be listed: nothing was decided for
    // this VM; the command stops, after releasing what it already deleted.
    if (!pruned.decided) {
      rc = Fail(pruned.status);
      break;
    }
    out["vms"].push_back(pruned.json);
    released.insert(released.end(), pruned.released.begin(), pruned.released.end());
    if (!pruned.status.ok()) {
      Fail(pruned.status);
      rc = kExitFailure;
      break;
    }
  }
  uint64_t removed = 0;
  for (const auto& jv : out["vms"]) {
    if (jv.contains("result")) removed += jv["result"]["deleted"].size();
  }
  if (removed > 0) {
    bool failed = false;
    out["gc"] = CollectAfterDelete(g, *repo, &failed);
    if (failed && rc == 0) rc = kExitFailure;
  }
  auto notes = ReleaseSnapshots(g, released);
  for (const auto& n : notes) Info(g, n);
  out["notes"] = notes;
  if (g.json)
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return rc;
}

int RunDelete(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("delete", vm, {{"vm", "--vm UUID"}, {"point", "--point TIMESTAMP"}})) {
    return kExitUsage;
  }
  const std::string v = vm["vm"].as<std::string>();
  const std::string point = vm["point"].as<std::string>();
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  auto points = repo->ListPoints(v);
  if (!points.ok()) return Fail(points.status());
  Result<repo::DeleteStats> st = Status::Ok();
  {
    auto lock = repo::VmLock::Acquire(*repo, v, "delete " + point);
    if (!lock.ok()) return Fail(lock.status());
    st = repo::DeletePoints(*repo, *lock, v, {point});
    if (!st.ok()) return Fail(st.status());
  }  // the lock (and its share of the store lock) goes before the collection
  if (!g.json) {
    Info(g, "deleted point " + point + " of VM " + v + ": " + std::to_string(st->layers_moved) +
                " data file(s) handed to later points, " + HumanBytes(st->bytes_released) +
                " released");
  }
  bool failed = false;
  nlohmann::json gc = CollectAfterDelete(g, *repo, &failed);
  auto notes = ReleaseSnapshots(g, st->released_snapshots);
  if (g.json) {
    nlohmann::json out = StatsJson(*st);
    out["vm"] = v;
    out["gc"] = gc;
    out["notes"] = notes;
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    for (const auto& n : notes) Info(g, n);
  }
  return failed ? kExitFailure : 0;
}

int RunGc(const Globals& g, const po::variables_map&) {
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  auto st = repo::CollectGarbage(*repo);
  if (!st.ok()) return Fail(st.status());
  if (st->skipped) {
    return Fail(Status::Busy("other commands are using the repository " + repo->location() +
                             (st->skipped_because.empty() ? "" : " (" + st->skipped_because + ")") +
                             "; try again when they are done"));
  }
  if (g.json) {
    std::cout << GcJson(*st).dump(2) << "\n";
  } else {
    Info(g, GcText(*st));
  }
  return 0;
}

int RunCompression(const Globals& g, const po::variables_map& vm) {
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  repo::RepoConfig c = repo->config();
  auto describe = [](const repo::RepoConfig& rc) {
    if (rc.version != repo::kStoreRepoFormatVersion) {
      return std::string(
          "none (format 1: blocks are stored verbatim until the next write "
          "converts the repository)");
    }
    return rc.compress ? "zstd level " + std::to_string(rc.level) : std::string("none");
  };
  if (!vm.count("level")) {
    std::printf("%s\n", describe(c).c_str());
    return 0;
  }
  const std::string arg = vm["level"].as<std::string>();
  // Only the compression changes: the content key (what stored blocks are
  // indexed by) and the object lock stay.  A repository of format 1 is
  // converted, with the defaults of a new one.
  repo::RepoConfig next = c;
  next.version = repo::kStoreRepoFormatVersion;
  if (arg == "none") {
    next.compress = false;
  } else {
    int level = 0;
    size_t used = 0;
    try {
      level = std::stoi(arg, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != arg.size() || level == 0 || level < kMinZstdLevel || level > kMaxZstdLevel) {
      std::fprintf(stderr,
                   "cbt-backup compression: LEVEL is a zstd level from %d to %d (not 0), or "
                   "none\n",
                   kMinZstdLevel, kMaxZstdLevel);
      return kExitUsage;
    }
    next.compress = true;
    next.level = level;
  }
  // Alone: a writer converting a format-1 repository meanwhile (it holds
  // the store lock shared) would write its own config over this one.
  auto lock = repo::StoreLock::Exclusive(*repo);
  if (!lock.ok()) return Fail(lock.status());
  Status st = repo->WriteConfig(next);
  if (!st.ok()) return Fail(st);
  Info(g, "new blocks are stored with " + describe(next) + "; stored blocks keep theirs");
  return 0;
}

int RunObjectLock(const Globals& g, const po::variables_map& vm) {
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  repo::RepoConfig c = repo->config();
  auto describe = [](const repo::RepoConfig& rc) {
    if (rc.lock_days == 0) return std::string("none");
    std::string mode = rc.lock_mode;
    std::transform(mode.begin(), mode.end(), mode.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return std::to_string(rc.lock_days) + " day(s), " + mode + " mode";
  };
  if (!vm.count("days")) {
    std::printf("%s\n", describe(c).c_str());
    return 0;
  }
  if (!repo->remote()) {
    return Fail(Status::InvalidArgument(
        "Object Lock is a setting of a repository on an object store (s3://...)"));
  }
  const std::string arg = vm["days"].as<std::string>();
  std::string mode = vm.count("mode") ? vm["mode"].as<std::string>() : "governance";
  std::transform(mode.begin(), mode.end(), mode.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
  if (mode != "GOVERNANCE" && mode != "COMPLIANCE") {
    std::fprintf(stderr, "cbt-backup object-lock: --mode is governance or compliance\n");
    return kExitUsage;
  }
  if (arg == "none") {
    c.lock_days = 0;
    c.lock_mode.clear();
  } else {
    int days = 0;
    size_t used = 0;
    try {
      days = std::stoi(arg, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != arg.size() || days < 1 || days > 36500) {
      std::fprintf(stderr, "cbt-backup object-lock: DAYS is 1 to 36500, or none\n");
      return kExitUsage;
    }
    c.lock_days = days;
    c.lock_mode = mode;
  }
  Status st = repo->WriteConfig(c);
  if (!st.ok()) return Fail(st);
  Info(g, "objects written from now on are retained for " + describe(c) +
              "; objects already written keep their retention");
  return 0;
}

}  // namespace

Command ObjectLockCommand() {
  return {"object-lock",
          "show, or set, how long the data objects of a repository on S3 are retained by "
          "S3 Object Lock",
          "[DAYS|none] [--mode governance|compliance]",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("days", po::value<std::string>(),
                            "days each new object is retained, or none")(
                "mode", po::value<std::string>(),
                "governance (default) or compliance (not even the account's root can shorten it)");
            p.add("days", 1);
          },
          RunObjectLock};
}

Command PruneCommand() {
  return {"prune", "remove points that no --keep-* rule keeps (the newest is always kept)",
          "--vm UUID|--all [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] "
          "[--keep-monthly N] [--keep-yearly N] [--dry-run] [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "the VM's UUID")(
                "all", "every VM in the repository")(
                "keep-last", po::value<int>()->default_value(0), "keep the N newest points")(
                "keep-hourly", po::value<int>()->default_value(0),
                "keep the newest point of each of the last N hours that have one")(
                "keep-daily", po::value<int>()->default_value(0), "same for days (UTC)")(
                "keep-weekly", po::value<int>()->default_value(0), "same for ISO weeks")(
                "keep-monthly", po::value<int>()->default_value(0), "same for months")(
                "keep-yearly", po::value<int>()->default_value(0), "same for years")(
                "dry-run,n", "only show what would be removed");
          },
          RunPrune};
}

Command GcCommand() {
  return {"gc", "release the stored blocks that no point reads (prune and delete do it too)",
          "[--json]", [](po::options_description&, po::positional_options_description&) {}, RunGc};
}

Command CompressionCommand() {
  return {"compression", "show, or set, how new blocks of the repository are compressed",
          "[LEVEL|none]",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("level", po::value<std::string>(),
                            "a zstd level (-7..19, not 0; default 3), or none");
            p.add("level", 1);
          },
          RunCompression};
}

Command DeleteCommand() {
  return {"delete", "remove one point; later points keep reading the same data",
          "--vm UUID --point TIMESTAMP [--json]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "the VM's UUID")(
                "point", po::value<std::string>(), "the point to remove");
          },
          RunDelete};
}

}  // namespace cbt::cli
