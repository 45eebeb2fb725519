// SPDX-License-Identifier: Apache-2.0
#include "repo/run_record.h"

#include "repo/layout.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

namespace cbt::repo {

namespace {

nlohmann::json AttemptJson(const RunAttempt& a) {
  return {{"time", a.time},
          {"result", a.ok ? "ok" : "failed"},
          {"error", a.error},
          {"point", a.point},
          {"job", a.job},
          {"seconds", a.seconds},
          {"bytes_read", a.bytes_read},
          {"bytes_stored", a.bytes_stored}};
}

// Fields are checked for type; a missing optional one keeps its default.
Result<RunAttempt> AttemptFromJson(const nlohmann::json& j, const std::string& file) {
  auto bad = [&file](const std::string& why) { return Status::Corruption(file + ": " + why); };
  if (!j.is_object()) return bad("an attempt is not an object");
  RunAttempt a;
  if (!j.contains("time") || !j["time"].is_string() || !IsTimestamp(j["time"].get<std::string>())) {
    return bad("no valid \"time\"");
  }
  a.time = j["time"].get<std::string>();
  if (!j.contains("result") || !j["result"].is_string() ||
      (j["result"] != "ok" && j["result"] != "failed")) {
    return bad("\"result\" is neither \"ok\" nor \"failed\"");
  }
  a.ok = j["result"] == "ok";
  for (auto [name, out] : {std::pair<const char*, std::string*>{"error", &a.error},
                           {"point", &a.point},
                           {"job", &a.job}}) {
    if (!j.contains(name)) continue;
    if (!j[name].is_string()) return bad(std::string("\"") + name + "\" is not a string");
    *out = j[name].get<std::string>();
  }
  if (!a.point.empty() && !IsTimestamp(a.point)) return bad("\"point\" is not a timestamp");
  if (j.contains("seconds")) {
    if (!j["seconds"].is_number()) return bad("\"seconds\" is not a number");
    a.seconds = j["seconds"].get<double>();
  }
  for (auto [name, out] : {std::pair<const char*, uint64_t*>{"bytes_read", &a.bytes_read},
                           {"bytes_stored", &a.bytes_stored}}) {
    if (!j.contains(name)) continue;
    if (!j[name].is_number_unsigned()) return bad(std::string("\"") + name + "\" is not a count");
    *out = j[name].get<uint64_t>();
  }
  return a;
}

}  // namespace

Result<std::optional<RunRecord>> ReadRunRecord(const Repository& repo, const std::string& vm) {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  const std::string file = JoinPath(VmDir(repo.path(), vm), kRunRecordFile);
  auto text = ReadFile(file);
  if (!text.ok()) {
    if (text.status().IsNotFound()) return std::optional<RunRecord>();
    return text.status();
  }
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption(file + ": not a JSON object");
  if (!j.contains("last")) return Status::Corruption(file + ": no \"last\" attempt");
  RunRecord r;
  CBT_ASSIGN_OR_RETURN(r.last, AttemptFromJson(j["last"], file));
  if (j.contains("failure") && !j["failure"].is_null()) {
    CBT_ASSIGN_OR_RETURN(RunAttempt f, AttemptFromJson(j["failure"], file));
    if (f.ok) return Status::Corruption(file + ": the \"failure\" attempt succeeded");
    r.failure = f;
  }
  return std::optional<RunRecord>(r);
}

Status RecordRun(const Repository& repo, const std::string& vm, const RunAttempt& attempt) {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  const std::string vm_dir = VmDir(repo.path(), vm);
  if (PathExists(vm_dir) && !IsRealDirectory(vm_dir)) {
    return Status::Corruption(vm_dir +
                              " is not a directory (a symbolic link?); refusing to "
                              "write through it");
  }
  // No directory: the VM was never resolved (a mistyped UUID), and a
  // record would make a VM that no command can remove appear in status.
  if (!IsRealDirectory(vm_dir)) return Status::Ok();
  std::optional<RunAttempt> failure;
  if (!attempt.ok) {
    failure = attempt;
  } else if (auto old = ReadRunRecord(repo, vm); old.ok() && old->has_value()) {
    failure = (*old)->failure;
  }
  nlohmann::json j = {{"version", 1}, {"last", AttemptJson(attempt)}, {"failure", nullptr}};
  if (failure) j["failure"] = AttemptJson(*failure);
  return WriteFileAtomic(JoinPath(vm_dir, kRunRecordFile),
                         j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace cbt::repo
