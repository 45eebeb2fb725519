// SPDX-License-Identifier: Apache-2.0
#include "backup/job.h"

#include "util/text.h"

#include <algorithm>
#include <charconv>
#include <map>

namespace cbt::backup {

namespace {

Result<bool> ParseBool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "off" || v == "0") return false;
  return Status::InvalidArgument(key + " = " + v + ": want true or false");
}

Result<int> ParseInt(const std::string& key, const std::string& v, int lo, int hi) {
  int n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return Status::InvalidArgument(key + " = " + v + ": want a whole number from " +
                                   std::to_string(lo) + " to " + std::to_string(hi));
  }
  return n;
}

Status Set(Job& job, const std::string& key, const std::string& field, const std::string& v) {
  if (field == "vm") {
    job.selection.vms.push_back(v);
  } else if (field == "tag") {
    job.selection.tags.push_back(v);
  } else if (field == "exclude") {
    job.selection.exclude.push_back(v);
  } else if (field == "all") {
    CBT_ASSIGN_OR_RETURN(job.selection.all, ParseBool(key, v));
  } else if (field == "full") {
    CBT_ASSIGN_OR_RETURN(job.full, ParseBool(key, v));
  } else if (field == "verify") {
    CBT_ASSIGN_OR_RETURN(job.verify, ParseBool(key, v));
  } else if (field == "jobs") {
    CBT_ASSIGN_OR_RETURN(job.jobs, ParseInt(key, v, 1, 64));
  } else if (field == "host-connections") {
    CBT_ASSIGN_OR_RETURN(job.host_connections, ParseInt(key, v, 1, 16));
  } else if (field == "connections") {
    CBT_ASSIGN_OR_RETURN(job.connections, ParseInt(key, v, 1, 16));
  } else if (field == "repo") {
    job.repo = v;
  } else if (field == "metrics-file") {
    job.metrics_file = v;
  } else {
    static const std::map<std::string, int repo::KeepPolicy::*> kKeep = {
        {"keep-last", &repo::KeepPolicy::last},       {"keep-hourly", &repo::KeepPolicy::hourly},
        {"keep-daily", &repo::KeepPolicy::daily},     {"keep-weekly", &repo::KeepPolicy::weekly},
        {"keep-monthly", &repo::KeepPolicy::monthly}, {"keep-yearly", &repo::KeepPolicy::yearly}};
    auto it = kKeep.find(field);
    if (it == kKeep.end()) return Status::InvalidArgument("unknown job setting " + key);
    CBT_ASSIGN_OR_RETURN(job.keep.*(it->second), ParseInt(key, v, 0, 100000));
  }
  if ((field == "vm" || field == "tag" || field == "exclude" || field == "repo" ||
       field == "metrics-file") &&
      v.empty()) {
    return Status::InvalidArgument(key + " is empty");
  }
  return Status::Ok();
}

}  // namespace

bool IsJobName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

Result<std::vector<Job>> ParseJobs(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  std::map<std::string, Job> jobs;
  const std::string prefix = kJobPrefix;
  for (const auto& [key, value] : entries) {
    if (key.rfind(prefix, 0) != 0) return Status::InvalidArgument("unknown setting " + key);
    const auto dot = key.rfind('.');
    if (dot <= prefix.size() - 1 || dot + 1 == key.size()) {
      return Status::InvalidArgument(key + ": settings of a job go in a [job.NAME] section");
    }
    const std::string name = key.substr(prefix.size(), dot - prefix.size());
    if (!IsJobName(name)) {
      return Status::InvalidArgument("[job." + Printable(name) +
                                     "]: a job name is letters, digits, '-' and '_' (at most 64)");
    }
    Job& job = jobs[name];
    job.name = name;
    CBT_RETURN_IF_ERROR(Set(job, key, key.substr(dot + 1), value));
  }
  std::vector<Job> out;
  for (auto& [name, job] : jobs) {
    if (job.selection.vms.empty() && !job.selection.all && job.selection.tags.empty()) {
      return Status::InvalidArgument("[job." + Printable(name) +
                                     "] selects no VM: give vm, all or tag");
    }
    out.push_back(std::move(job));
  }
  return out;
}

Result<Job> FindJob(const std::vector<Job>& jobs, const std::string& name) {
  std::string known;
  for (const auto& j : jobs) {
    if (j.name == name) return j;
    known += (known.empty() ? "" : ", ") + j.name;
  }
  return Status::NotFound("no job '" + Printable(name) + "' in the config file" +
                          (known.empty() ? " (it defines none)" : " (jobs: " + known + ")"));
}

}  // namespace cbt::backup
