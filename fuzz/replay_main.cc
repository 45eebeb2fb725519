// SPDX-License-Identifier: Apache-2.0
//
// Runs a libFuzzer target over files, without libFuzzer: how CI replays the
// checked-in corpora (and every crash found) under the sanitizer build with
// the same compiler as the rest of the project.  Arguments are files or
// directories (every regular file in them, non-recursive).
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int RunFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int failures = 0;
  size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    struct stat st;
    if (::stat(arg.c_str(), &st) != 0) {
      std::fprintf(stderr, "no such file or directory: %s\n", arg.c_str());
      return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
      failures += RunFile(arg);
      ++inputs;
      continue;
    }
    DIR* d = ::opendir(arg.c_str());
    if (d == nullptr) return 1;
    while (dirent* e = ::readdir(d)) {
      const std::string path = arg + "/" + e->d_name;
      if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        failures += RunFile(path);
        ++inputs;
      }
    }
    ::closedir(d);
  }
  std::printf("replayed %zu input(s)\n", inputs);
  return failures == 0 && inputs > 0 ? 0 : 1;
}
