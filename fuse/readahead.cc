// SPDX-License-Identifier: Apache-2.0
//
// RaiseReadahead (readahead.h): finds the mount's device number and writes
// /sys/class/bdi/<major>:<minor>/read_ahead_kb.
#include "readahead.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <thread>

namespace cbt::cbtfs {

void RaiseReadahead(const std::string& mountpoint, unsigned kb) {
  if (kb == 0) return;
  std::thread([mountpoint, kb] {
    struct stat st;
    if (::stat(mountpoint.c_str(), &st) != 0) return;
    std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                       std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return;
    std::fprintf(f, "%u\n", kb);
    std::fclose(f);
  }).detach();
}

}  // namespace cbt::cbtfs
