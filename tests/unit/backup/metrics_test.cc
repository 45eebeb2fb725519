// SPDX-License-Identifier: Apache-2.0
//
// The Prometheus textfile: each family has HELP and TYPE, one sample per VM
// or per job, and hostile VM names cannot break the format.
#include "backup/metrics.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <sstream>

using namespace cbt::backup;

namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("metrics: families, samples and job success") {
  JobMetrics m;
  m.job = "nightly";
  m.run_time = 1733360000;
  m.seconds = 12.5;
  m.pruned_points = 3;
  VmMetrics ok;
  ok.uuid = "11111111-1111-4111-8111-111111111111";
  ok.name = "web";
  ok.ok = true;
  ok.bytes_read = 1048576;
  ok.bytes_stored = 4096;
  ok.last_success = 1733360005;
  VmMetrics bad = ok;
  bad.uuid = "22222222-2222-4222-8222-222222222222";
  bad.name = "db";
  bad.ok = false;
  m.vms = {ok, bad};
  const std::string text = FormatMetrics(m);
  const auto lines = Lines(text);
  int help = 0, type = 0, samples = 0;
  for (const auto& l : lines) {
    if (l.rfind("# HELP ", 0) == 0) {
      ++help;
    } else if (l.rfind("# TYPE ", 0) == 0) {
      ++type;
      CHECK(l.substr(l.rfind(' ') + 1) == "gauge");
    } else {
      ++samples;
    }
  }
  CHECK(help == 12);
  CHECK(type == 12);
  CHECK(samples == 6 * 2 + 6);
  CHECK(text.find(
            "cbt_backup_vm_last_run_success{backup_job=\"nightly\",vm=\"22222222-2222-4222-8222-"
            "222222222222\",vm_name=\"db\"} 0\n") != std::string::npos);
  CHECK(text.find("cbt_backup_vm_read_bytes{backup_job=\"nightly\",vm=\"11111111-1111-4111-8111-"
                  "111111111111\",vm_name=\"web\"} 1048576\n") != std::string::npos);
  CHECK(text.find("cbt_backup_job_failed_vms{backup_job=\"nightly\"} 1\n") != std::string::npos);
  CHECK(text.find("cbt_backup_job_success{backup_job=\"nightly\"} 0\n") != std::string::npos);
  CHECK(text.find("cbt_backup_job_pruned_points{backup_job=\"nightly\"} 3\n") != std::string::npos);
  CHECK(
      text.find("cbt_backup_job_last_run_timestamp_seconds{backup_job=\"nightly\"} 1733360000\n") !=
      std::string::npos);

  m.vms = {ok};
  CHECK(FormatMetrics(m).find("cbt_backup_job_success{backup_job=\"nightly\"} 1\n") !=
        std::string::npos);
  m.failed = true;  // e.g. the server could not be reached
  CHECK(FormatMetrics(m).find("cbt_backup_job_success{backup_job=\"nightly\"} 0\n") !=
        std::string::npos);
}

TEST_CASE("metrics: a hostile VM name stays inside its label") {
  JobMetrics m;
  VmMetrics v;
  v.uuid = "11111111-1111-4111-8111-111111111111";
  v.name = "evil\"} 1\nfake_metric{a=\"\\\x1b[2J\xff";
  m.vms = {v};
  const std::string text = FormatMetrics(m);
  for (const auto& l : Lines(text)) {
    // No line but HELP, TYPE and our own samples.
    CHECK((l.rfind("# ", 0) == 0 || l.rfind("cbt_backup_", 0) == 0));
    CHECK(l.find('\x1b') == std::string::npos);
    if (l.rfind("cbt_backup_vm_last_run_success", 0) == 0) {
      // The label value ends at the first unescaped quote, right before '}'.
      const auto open = l.find("vm_name=\"") + 9;
      size_t i = open;
      while (l[i] != '"') i += l[i] == '\\' ? 2 : 1;
      CHECK(l.substr(i) == "\"} 0");
    }
  }
  CHECK(text.find("\nfake_metric") == std::string::npos);
}

TEST_CASE("metrics: the file is replaced whole and readable by the collector") {
  cbt::testing::TempDir dir;
  const std::string path = dir.path() + "/cbt.prom";
  JobMetrics m;
  m.job = "j";
  // Under a service manager's umask 077 too: node_exporter is another user.
  const mode_t old_umask = ::umask(077);
  const bool written = WriteMetricsFile(path, m).ok() && WriteMetricsFile(path, m).ok();
  ::umask(old_umask);
  REQUIRE(written);
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  auto text = cbt::ReadFile(path);
  REQUIRE(text.ok());
  CHECK(*text == FormatMetrics(m));
  auto names = cbt::ListDir(dir.path());
  REQUIRE(names.ok());
  CHECK(names->size() == 1);  // no temporary left
}
