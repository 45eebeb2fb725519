// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include <cstdio>

namespace cbt::cli {

int Fail(const Status& status) {
  std::fprintf(stderr, "cbt-backup: %s\n", status.message().c_str());
  return kExitFailure;
}

Result<repo::Repository> OpenRepo(const Globals& g, bool create) {
  return repo::Repository::Open(g.repo, create);
}

void Info(const Globals& g, const std::string& line) {
  if (g.verbosity > 0 && !g.json) std::fprintf(stderr, "%s\n", line.c_str());
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace cbt::cli
