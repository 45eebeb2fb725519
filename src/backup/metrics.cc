// SPDX-License-Identifier: Apache-2.0
#include "backup/metrics.h"

#include "util/file.h"
#include "util/text.h"

#include <cinttypes>
#include <cstdio>

namespace cbt::backup {

namespace {

// A label value as the exposition format wants it: backslash and double
// quote escaped.  Printable has already turned line feeds and other
// controls, and invalid UTF-8, into \xNN.
std::string LabelValue(const std::string& raw) {
  std::string out;
  for (char c : Printable(raw)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string Number(uint64_t v) { return std::to_string(v); }

class Writer {
 public:
  void Family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void Sample(const char* name, const std::string& labels, const std::string& value) {
    out_ += std::string(name) + "{" + labels + "} " + value + "\n";
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

std::string FormatMetrics(const JobMetrics& m) {
  // Not "job": Prometheus sets that label on every scraped series (the
  // scrape job), and would rename ours to exported_job.
  const std::string job = "backup_job=\"" + LabelValue(m.job) + "\"";
  std::vector<std::string> vm_labels;
  for (const auto& v : m.vms) {
    vm_labels.push_back(job + ",vm=\"" + LabelValue(v.uuid) + "\",vm_name=\"" + LabelValue(v.name) +
                        "\"");
  }
  Writer w;
  auto per_vm = [&](const char* name, const char* type, const char* help, auto value) {
    w.Family(name, type, help);
    for (size_t i = 0; i < m.vms.size(); ++i) w.Sample(name, vm_labels[i], value(m.vms[i]));
  };
  per_vm("cbt_backup_vm_last_success_timestamp_seconds", "gauge",
         "UNIX time of the VM's newest backup point (0: none).",
         [](const VmMetrics& v) { return Number(v.last_success); });
  per_vm("cbt_backup_vm_last_run_timestamp_seconds", "gauge",
         "UNIX time the VM's last backup attempt started.",
         [](const VmMetrics& v) { return Number(v.run_time); });
  per_vm("cbt_backup_vm_last_run_success", "gauge",
         "1 if the VM's last backup attempt succeeded, else 0.",
         [](const VmMetrics& v) { return std::string(v.ok ? "1" : "0"); });
  per_vm("cbt_backup_vm_duration_seconds", "gauge", "Duration of the VM's last backup attempt.",
         [](const VmMetrics& v) { return Number(v.seconds); });
  per_vm("cbt_backup_vm_read_bytes", "gauge", "Bytes read from the VM's disks in the last backup.",
         [](const VmMetrics& v) { return Number(v.bytes_read); });
  per_vm("cbt_backup_vm_stored_bytes", "gauge", "Bytes the last backup of the VM stored.",
         [](const VmMetrics& v) { return Number(v.bytes_stored); });

  uint64_t failed = 0;
  for (const auto& v : m.vms) failed += v.ok ? 0 : 1;
  auto per_job = [&](const char* name, const char* help, const std::string& value) {
    w.Family(name, "gauge", help);
    w.Sample(name, job, value);
  };
  per_job("cbt_backup_job_last_run_timestamp_seconds", "UNIX time the job's last run started.",
          Number(m.run_time));
  per_job("cbt_backup_job_duration_seconds", "Duration of the job's last run.", Number(m.seconds));
  per_job("cbt_backup_job_vms", "VMs the job's last run backed up or tried to.",
          Number(static_cast<uint64_t>(m.vms.size())));
  per_job("cbt_backup_job_failed_vms", "VMs whose backup failed in the job's last run.",
          Number(failed));
  per_job("cbt_backup_job_success", "1 if every VM of the job's last run succeeded, else 0.",
          failed == 0 && !m.failed ? "1" : "0");
  per_job("cbt_backup_job_pruned_points", "Points the job's last run removed by its keep rules.",
          Number(m.pruned_points));
  return w.Take();
}

Status WriteMetricsFile(const std::string& path, const JobMetrics& m) {
  return WriteFileAtomic(path, FormatMetrics(m), 0644);
}

}  // namespace cbt::backup
