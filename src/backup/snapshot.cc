// SPDX-License-Identifier: Apache-2.0
//
// Naming, tagging and removal of this repository's snapshots, the search
// for leftovers of interrupted runs, and the SR CBT capability check.  Why
// a disk is data_destroyed or destroyed, and why a CD's VDI never is: step 2
// of the design notes in backup.cc.
#include "backup/snapshot.h"

#include "util/text.h"

#include <chrono>
#include <thread>

namespace cbt::backup {

using xapi::Session;
using xapi::Value;

namespace {

constexpr char kSnapshotPrefix[] = "cbt-backup ";
// other_config key on the snapshot VM and its VDIs naming the repository.
constexpr char kRepoKey[] = "cbt-backup-repository";

bool IsOurSnapshotName(const std::string& name, const std::string& repo_id) {
  const std::string tail = " [" + repo_id + "]";
  return name.rfind(kSnapshotPrefix, 0) == 0 && name.size() > tail.size() &&
         name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
}

std::string OtherConfig(const Value& rec, const std::string& key) {
  const Value* oc = rec.Find("other_config");
  return oc ? oc->GetString(key) : std::string();
}

Result<Value> Record(Session& s, const std::string& cls, const std::string& ref) {
  return s.Call(cls + ".get_record", {Value(ref)});
}

// Retries VDI_IN_USE: xapi-nbd and snapshot VBDs take a moment to go away.
Status CallRetryInUse(Session& s, const std::string& method, const std::string& ref) {
  for (int attempt = 0;; ++attempt) {
    auto r = s.Call(method, {Value(ref)});
    if (r.ok()) return Status::Ok();
    const std::string code = r.status().remote_code();
    if ((code == "VDI_IN_USE" || code == "OTHER_OPERATION_IN_PROGRESS") && attempt < 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500 * (attempt + 1)));
      continue;
    }
    return r.status();
  }
}

// Snapshot VDI UUIDs that committed points of `vm` hold.
std::set<std::string> CommittedSnapshots(const repo::Repository& repo, const std::string& vm) {
  std::set<std::string> out;
  auto points = repo.ListPoints(vm);
  if (!points.ok()) return out;
  for (const auto& p : *points) {
    auto m = repo.ReadManifest(vm, p);
    if (!m.ok()) continue;
    for (const auto& d : m->disks) {
      if (!d.snapshot_vdi_uuid.empty()) out.insert(d.snapshot_vdi_uuid);
    }
  }
  return out;
}

// True for a VDI that a backup into this repository made: a snapshot
// (never an ISO or the original disk that VM.snapshot left in place for an
// ignored or CD drive), not yet reduced to CBT metadata, of one of the VM's
// disks or tagged with this repository's id.
bool IsOurSnapshotDisk(const SnapshotOwner& owner, const Value& vdi) {
  auto snap = vdi.GetBool("is_a_snapshot");
  if (!(snap.ok() && *snap) || vdi.GetString("type") == "cbt_metadata") return false;
  return owner.vm_disks.count(vdi.GetString("snapshot_of")) > 0 ||
         OtherConfig(vdi, kRepoKey) == owner.repo_id;
}

// data_destroy for a snapshot VDI a committed point holds (its CBT metadata
// is the base of the next incremental), destroy for the others.
Status RemoveSnapshotDisk(Session& s, const std::string& ref, const Value& rec,
                          const std::set<std::string>& committed) {
  auto cbt = rec.GetBool("cbt_enabled");
  const bool keep_metadata = committed.count(rec.GetString("uuid")) && cbt.ok() && *cbt;
  return CallRetryInUse(s, keep_metadata ? "VDI.data_destroy" : "VDI.destroy", ref)
      .WithContext("snapshot disk " + rec.GetString("uuid"));
}

}  // namespace

std::string SnapshotName(const std::string& point, const std::string& repo_id) {
  return kSnapshotPrefix + point + " [" + repo_id + "]";
}

Status TagSnapshotVm(Session& s, const std::string& vm_ref, const std::string& repo_id) {
  (void)s.Call("VM.remove_from_other_config", {Value(vm_ref), Value(kRepoKey)});
  return s.Call("VM.add_to_other_config", {Value(vm_ref), Value(kRepoKey), Value(repo_id)})
      .status();
}

Status TagSnapshotDisk(Session& s, const std::string& vdi_ref, const std::string& repo_id) {
  (void)s.Call("VDI.remove_from_other_config", {Value(vdi_ref), Value(kRepoKey)});
  return s.Call("VDI.add_to_other_config", {Value(vdi_ref), Value(kRepoKey), Value(repo_id)})
      .status();
}

std::vector<std::string> RemoveSnapshot(Session& s, const SnapshotOwner& owner,
                                        const std::string& snap_vm,
                                        const std::set<std::string>& committed) {
  std::vector<std::string> failed;
  std::vector<std::pair<std::string, Value>> vdis;
  auto vbds = s.Call("VM.get_VBDs", {Value(snap_vm)});
  if (!vbds.ok()) {
    failed.push_back("snapshot VM " + snap_vm + ": " + vbds.status().message());
    return failed;
  }
  for (const auto& vbd : vbds->items()) {
    auto rec = Record(s, "VBD", vbd.str());
    if (!rec.ok()) continue;
    std::string vdi = rec->GetString("VDI");
    if (rec->GetString("type") != "Disk" || vdi.empty() || vdi == "OpaqueRef:NULL") continue;
    auto vrec = Record(s, "VDI", vdi);
    if (vrec.ok() && IsOurSnapshotDisk(owner, *vrec)) vdis.emplace_back(vdi, *vrec);
  }
  auto destroyed = s.Call("VM.destroy", {Value(snap_vm)});
  if (!destroyed.ok()) failed.push_back("snapshot VM: " + destroyed.status().message());
  for (const auto& [ref, rec] : vdis) {
    Status st = RemoveSnapshotDisk(s, ref, rec, committed);
    if (!st.ok()) failed.push_back(st.message());
  }
  return failed;
}

std::string JoinFailures(const std::vector<std::string>& failed) {
  std::string out;
  for (const auto& f : failed) out += (out.empty() ? "" : "; ") + f;
  return out;
}

void CleanLeftovers(Session& s, const repo::Repository& repo, const SnapshotOwner& owner,
                    const std::string& vm_ref, const std::string& vm_uuid,
                    std::vector<std::string>* notes,
                    const std::function<void(const std::string&)>& log) {
  std::set<std::string> committed = CommittedSnapshots(repo, vm_uuid);
  auto say = [&log](const std::string& line) {
    if (log) log(line);
  };
  auto note = [&](const std::string& line) {
    notes->push_back(line);
    say(line);
  };
  auto snaps = s.Call("VM.get_snapshots", {Value(vm_ref)});
  if (!snaps.ok()) {
    note("cannot list the VM's snapshots to clean up: " + snaps.status().message());
  } else {
    for (const auto& snap : snaps->items()) {
      auto rec = Record(s, "VM", snap.str());
      if (!rec.ok()) continue;
      const std::string name = rec->GetString("name_label");
      if (!IsOurSnapshotName(name, owner.repo_id) && OtherConfig(*rec, kRepoKey) != owner.repo_id) {
        continue;
      }
      const std::string label = "'" + Printable(name) + "' (" + rec->GetString("uuid") + ")";
      say("removing snapshot " + label + " left by an interrupted backup");
      auto failed = RemoveSnapshot(s, owner, snap.str(), committed);
      if (failed.empty()) {
        notes->push_back("removed leftover snapshot " + label);
      } else {
        note("could not remove all of leftover snapshot " + label + ": " + JoinFailures(failed));
      }
    }
  }
  // Orphans: a run killed after VM.destroy and before its disks went.  Only
  // the tag counts here: other tools' snapshots of these disks are not ours.
  for (const auto& disk : owner.vm_disks) {
    auto vsnaps = s.Call("VDI.get_snapshots", {Value(disk)});
    if (!vsnaps.ok()) continue;
    for (const auto& v : vsnaps->items()) {
      auto rec = Record(s, "VDI", v.str());
      if (!rec.ok() || OtherConfig(*rec, kRepoKey) != owner.repo_id ||
          !IsOurSnapshotDisk(owner, *rec)) {
        continue;
      }
      if (!rec->GetStrings("VBDs").empty()) continue;  // held by a snapshot VM: handled above
      Status st = RemoveSnapshotDisk(s, v.str(), *rec, committed);
      if (st.ok()) {
        notes->push_back("removed orphaned snapshot disk " + rec->GetString("uuid"));
      } else {
        note("could not remove orphaned snapshot disk: " + st.message());
      }
    }
  }
}

// Not SR.allowed_operations, which xapi empties of everything but plug
// while any operation runs on the SR (xapi_sr_operations.ml,
// check_parallel_ops), so a busy shared SR would turn every incremental
// into a full backup.
std::optional<bool> SrSupportsCbt(Session& s, const std::string& sr_ref,
                                  std::map<std::string, std::optional<bool>>* cache) {
  auto type = s.Call("SR.get_type", {Value(sr_ref)});
  if (!type.ok()) return std::nullopt;
  auto hit = cache->find(type->str());
  if (hit != cache->end()) return hit->second;
  std::optional<bool> answer;
  auto sms = s.Call("SM.get_all_records");
  if (sms.ok()) {
    answer = false;
    for (const auto& [ref, sm] : sms->members()) {
      if (sm.GetString("type") != type->str()) continue;
      const Value* features = sm.Find("features");
      answer = features != nullptr && features->Find("VDI_CONFIG_CBT") != nullptr;
    }
  }
  (*cache)[type->str()] = answer;
  return answer;
}

}  // namespace cbt::backup
