// SPDX-License-Identifier: Apache-2.0
//
// Selecting VMs from the pool's records and the worker threads that back
// them up: a shared index into the list hands out the next VM, so a slow VM
// holds up one worker only.
#include "backup/pool_run.h"

#include "backup/connection_budget.h"
#include "repo/layout.h"
#include "util/clock.h"
#include "util/interrupt.h"
#include "util/text.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <map>
#include <set>
#include <system_error>
#include <thread>

namespace cbt::backup {

using xapi::Value;

namespace {

bool Flag(const Value& rec, const char* name) {
  auto v = rec.GetBool(name);
  return v.ok() && *v;
}

// The ref of the VM that `key` (UUID or name label) names among `vms`.
Result<std::string> Find(const std::map<std::string, Value>& vms, const std::string& key) {
  std::vector<std::string> found;
  for (const auto& [ref, rec] : vms) {
    if (rec.GetString("uuid") == key || rec.GetString("name_label") == key) found.push_back(ref);
  }
  if (found.empty()) {
    return Status::NotFound("the server has no VM " +
                            std::string(repo::IsUuid(key) ? "" : "named ") + "'" + key + "'");
  }
  if (found.size() > 1) {
    return Status::InvalidArgument(std::to_string(found.size()) + " VMs are named '" + key +
                                   "'; give the VM's UUID instead");
  }
  return found[0];
}

}  // namespace

Result<std::vector<VmInfo>> SelectVms(xapi::Session& s, const Selection& sel) {
  CBT_ASSIGN_OR_RETURN(Value all, s.Call("VM.get_all_records"));
  // Only real VMs: templates, snapshots and control domains are never
  // backed up, not even when named.
  std::map<std::string, Value> vms;
  for (const auto& [ref, rec] : all.members()) {
    if (Flag(rec, "is_a_template") || Flag(rec, "is_a_snapshot") ||
        Flag(rec, "is_control_domain")) {
      continue;
    }
    vms.emplace(ref, rec);
  }
  std::set<std::string> chosen;
  for (const auto& key : sel.vms) {
    CBT_ASSIGN_OR_RETURN(std::string ref, Find(vms, key));
    chosen.insert(ref);
  }
  for (const auto& [ref, rec] : vms) {
    if (sel.all) chosen.insert(ref);
    const auto tags = rec.GetStrings("tags");
    for (const auto& t : sel.tags) {
      if (std::find(tags.begin(), tags.end(), t) != tags.end()) chosen.insert(ref);
    }
  }
  for (const auto& key : sel.exclude) {
    CBT_ASSIGN_OR_RETURN(std::string ref, Find(vms, key));
    chosen.erase(ref);
  }
  if (chosen.empty()) return Status::InvalidArgument("no VM matches the selection");
  CBT_ASSIGN_OR_RETURN(Value vbds, s.Call("VBD.get_all_records"));
  std::vector<VmInfo> out;
  for (const auto& ref : chosen) {
    const Value& rec = vms.at(ref);
    VmInfo info;
    info.uuid = rec.GetString("uuid");
    info.name = rec.GetString("name_label");
    info.power_state = rec.GetString("power_state");
    info.tags = rec.GetStrings("tags");
    for (const auto& vbd : rec.GetStrings("VBDs")) {
      const Value* v = vbds.Find(vbd);
      if (v == nullptr || v->GetString("type") != "Disk" || Flag(*v, "empty")) continue;
      const std::string vdi = v->GetString("VDI");
      if (!vdi.empty() && vdi != "OpaqueRef:NULL") ++info.disks;
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const VmInfo& a, const VmInfo& b) {
    return a.name != b.name ? a.name < b.name : a.uuid < b.uuid;
  });
  return out;
}

std::vector<VmResult> RunPool(const repo::Repository& repo, const std::vector<VmInfo>& vms,
                              const PoolOptions& options) {
  std::vector<VmResult> results(vms.size());
  for (size_t i = 0; i < vms.size(); ++i) {
    results[i].vm = vms[i];
    results[i].status = Status::Aborted("not started: the command was interrupted");
  }
  // The repository id is created here, once, not by workers racing.
  if (auto id = repo.Id(/*create=*/true); !id.ok()) {
    for (auto& r : results) r.status = id.status();
    return results;
  }
  ConnectionBudget budget(options.host_connections);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    std::unique_ptr<xapi::Session> session;
    for (;;) {
      if (Interrupted()) break;
      const size_t i = next++;
      if (i >= vms.size()) break;
      VmResult& r = results[i];
      r.started = true;
      r.start_time = static_cast<double>(std::time(nullptr));
      const double t0 = MonotonicSeconds();
      if (!session) {
        auto s = options.login();
        if (!s.ok()) {
          r.status = s.status().WithContext("login");
          r.seconds = MonotonicSeconds() - t0;
          if (options.on_done) options.on_done(r);
          continue;
        }
        session = std::move(*s);
      }
      Options o = options.backup;
      o.vm = vms[i].uuid;
      o.budget = &budget;
      // Lines of several VMs interleave: each names its VM.
      if (options.backup.log) {
        o.log = [&options, name = Printable(vms[i].name)](const std::string& line) {
          options.backup.log(name + ": " + line);
        };
      }
      auto report = Run(*session, repo, o);
      r.seconds = MonotonicSeconds() - t0;
      if (report.ok()) {
        r.status = Status::Ok();
        r.report = std::move(*report);
      } else {
        r.status = report.status();
      }
      if (options.on_done) options.on_done(r);
    }
    if (session) session->Logout();
  };
  const int jobs =
      std::clamp<int>(options.jobs, 1, static_cast<int>(std::max<size_t>(1, vms.size())));
  std::vector<std::thread> threads;
  for (int j = 1; j < jobs; ++j) {
    try {
      threads.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // fewer workers: the others take the remaining VMs
    }
  }
  worker();  // the calling thread is a worker too
  for (auto& t : threads) t.join();
  return results;
}

}  // namespace cbt::backup
