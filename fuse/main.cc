// SPDX-License-Identifier: Apache-2.0
//
// cbtfs: a read-only FUSE view of a cbt-backup repository.  This file is its
// command line: `mount` reads its arguments (with libfuse's fuse_opt_parse
// where that reads them as cbtfs always has), checks the repository and the
// mount point and runs fuse_main with the handlers of ops.h; `umount` runs
// fusermount3.  What a mount shows and how: tree.h (the paths, the caches),
// description.h (point.txt), ops.h (the handlers, O_DIRECT), readahead.h.
#include "objstore/s3.h"
#include "ops.h"
#include "readahead.h"
#include "tree.h"

#include "repo/repository.h"
#include "util/file.h"

#include <fuse.h>
#include <fuse_opt.h>

#include <sys/resource.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

int Usage(FILE* out) {
  std::fprintf(out,
               "usage: cbtfs mount REPO MOUNTPOINT [-f] [-d] [-o OPTIONS]\n"
               "       cbtfs umount MOUNTPOINT\n"
               "\n"
               "Shows every point of the cbt-backup repository REPO as read-only raw disk\n"
               "files under MOUNTPOINT/<vm-uuid>/<timestamp>/<vdi-uuid>.raw.\n"
               "  -f          stay in the foreground\n"
               "  -d          debug output (implies -f)\n"
               "  -o OPTIONS  FUSE mount options, e.g. allow_other\n"
               "  --readahead-kb N  kernel readahead for this mount (default 4096; 0 keeps\n"
               "                    the kernel's default; setting it needs root)\n");
  return out == stdout ? 0 : 2;
}

// The arguments of "cbtfs mount", as read.
struct MountArgs {
  std::vector<std::string> positional;  // REPO MOUNTPOINT
  std::vector<std::string> fuse_opts;   // for fuse_main: -o OPTIONS, -f, -d, -s
  unsigned readahead_kb = cbt::cbtfs::kDefaultReadaheadKb;
  int exit_code = 1;  // when reading them ends the command (1: fuse_opt_parse failed itself)
};

constexpr int kKeyHelp = 0;

const fuse_opt kMountOptions[] = {
    FUSE_OPT_KEY("-f", FUSE_OPT_KEY_KEEP), FUSE_OPT_KEY("-d", FUSE_OPT_KEY_KEEP),
    FUSE_OPT_KEY("-s", FUSE_OPT_KEY_KEEP), FUSE_OPT_KEY("-h", kKeyHelp),
    FUSE_OPT_KEY("--help", kKeyHelp),      FUSE_OPT_END,
};

// fuse_opt_parse's processing function: words are REPO and MOUNTPOINT, and
// an option not in kMountOptions is unknown.
int OnMountArg(void* data, const char* arg, int key, struct fuse_args*) {
  auto* args = static_cast<MountArgs*>(data);
  switch (key) {
    case FUSE_OPT_KEY_NONOPT:
      args->positional.emplace_back(arg);
      return 0;
    case kKeyHelp:
      args->exit_code = Usage(stdout);
      return -1;
    default:
      std::fprintf(stderr, "cbtfs: unknown option '%s'\n", arg);
      args->exit_code = 2;
      return -1;
  }
}

// Reads the arguments after "mount".  False when they end the command (help,
// or a usage error already printed): then exit with args->exit_code.
bool ReadMountArgs(int argc, char** argv, MountArgs* args) {
  std::vector<char*> rest = {argv[0]};  // for fuse_opt_parse
  int i = 2;
  for (; i < argc; ++i) {
    const std::string_view a = argv[i];
    // "--" and an option without its value stop here; they are reported below.
    if (a == "--" || ((a == "-o" || a == "--readahead-kb") && i + 1 == argc)) break;
    if (a.starts_with("-o")) {
      // By hand: fuse_opt_parse would read an option in OPTIONS that begins with '-' as a flag.
      args->fuse_opts.emplace_back(a);
      if (a == "-o") args->fuse_opts.emplace_back(argv[++i]);
    } else if (a == "--readahead-kb") {
      // By hand: fuse_opt_parse would also take "--readahead-kbN" and "--readahead-kb=N".
      args->readahead_kb = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else {
      rest.push_back(argv[i]);
    }
  }
  struct fuse_args flags = FUSE_ARGS_INIT(static_cast<int>(rest.size()), rest.data());
  if (fuse_opt_parse(&flags, args, kMountOptions, OnMountArg) != 0) return false;
  for (int k = 1; k < flags.argc; ++k) args->fuse_opts.emplace_back(flags.argv[k]);
  fuse_opt_free_args(&flags);
  if (i < argc) {
    // By hand: fuse_opt_parse takes "--" for the end of options and words a missing value its
    // own way.  Either is the last argument read, so it is reported after the ones before it.
    if (std::string_view(argv[i]) == "--") {
      std::fprintf(stderr, "cbtfs: unknown option '%s'\n", argv[i]);
      args->exit_code = 2;
    } else {
      args->exit_code = Usage(stderr);
    }
    return false;
  }
  if (args->positional.size() != 2) {
    args->exit_code = Usage(stderr);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage(stderr);
  std::string verb = argv[1];
  if (verb == "--help" || verb == "-h") return Usage(stdout);
  if (verb == "--version") {
    std::printf("cbtfs %s (libfuse %d)\n", CBT_VERSION, fuse_version());
    return 0;
  }
  if (verb == "umount" || verb == "unmount") {
    if (argc != 3) return Usage(stderr);
    execlp("fusermount3", "fusermount3", "-u", argv[2], static_cast<char*>(nullptr));
    std::fprintf(stderr, "cbtfs: cannot run fusermount3: %s\n", std::strerror(errno));
    return 1;
  }
  if (verb != "mount") {
    std::fprintf(stderr, "cbtfs: unknown command '%s'\n", verb.c_str());
    return Usage(stderr);
  }
  MountArgs parsed;
  if (!ReadMountArgs(argc, argv, &parsed)) return parsed.exit_code;
  const std::vector<std::string>& positional = parsed.positional;
  char real[PATH_MAX];
  const bool on_store = cbt::objstore::IsS3Url(positional[0]);
  // The daemon changes to "/", so the repository path must be absolute.
  if (!on_store && ::realpath(positional[0].c_str(), real) == nullptr) {
    std::fprintf(stderr, "cbtfs: repository %s: %s\n", positional[0].c_str(), std::strerror(errno));
    return 1;
  }
  const char* ca_bundle = std::getenv("AWS_CA_BUNDLE");
  auto repo = on_store ? cbt::repo::Repository::OpenS3(positional[0], /*create=*/false,
                                                       ca_bundle != nullptr ? ca_bundle : "")
                       : cbt::repo::Repository::Open(real, /*create=*/false);
  if (!repo.ok()) {
    std::fprintf(stderr, "cbtfs: %s\n", repo.status().message().c_str());
    return 1;
  }
  if (!cbt::IsDirectory(positional[1])) {
    std::fprintf(stderr, "cbtfs: mount point %s is not a directory\n", positional[1].c_str());
    return 1;
  }
  char mnt_real[PATH_MAX];
  if (::realpath(positional[1].c_str(), mnt_real) == nullptr) {
    std::fprintf(stderr, "cbtfs: mount point %s: %s\n", positional[1].c_str(),
                 std::strerror(errno));
    return 1;
  }
  // A deep chain keeps one descriptor per file of each open image.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  openlog("cbtfs", LOG_PID, LOG_DAEMON);

  static cbt::cbtfs::Mount mount{cbt::cbtfs::Filesystem(std::move(*repo)), mnt_real,
                                 parsed.readahead_kb};
  static struct fuse_operations ops = cbt::cbtfs::Operations();

  std::vector<std::string> args = {"cbtfs", positional[1], "-o",
                                   "ro,default_permissions,fsname=cbtfs,subtype=cbtfs"};
  args.insert(args.end(), parsed.fuse_opts.begin(), parsed.fuse_opts.end());
  // Options given later win: a user's "rw" would make the kernel mount
  // read-write (writes still fail with EROFS, but the mount table lies).
  args.insert(args.end(), {"-o", "ro"});
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  return fuse_main(static_cast<int>(cargs.size() - 1), cargs.data(), &ops, &mount);
}
