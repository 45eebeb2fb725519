// SPDX-License-Identifier: Apache-2.0
//
// mount / umount: the whole round of getting files out of a point for a
// person.  mount starts cbtfs on DIR/.cbtfs, asks blkid what each disk,
// partition and LV file of the point holds (image::FilesToProbe chooses
// them), and loop-mounts every filesystem read-only (without replaying
// journals) under DIR/<name>; umount undoes all of it.  Needs root, like any
// loop mount.
//
// The guest's filesystems are hostile input to this host: they are mounted
// nosuid,nodev,noexec, in a directory private to root, so no file of a
// guest runs or opens a device here, and no other user can reach them.
#include "cli.h"

#include "image/volumes.h"
#include "repo/layout.h"
#include "util/file.h"
#include "util/text.h"

#include <fcntl.h>
#include <libmount.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string_view>
#include <thread>

extern char** environ;

namespace cbt::cli {

namespace {

constexpr char kCbtfsDir[] = ".cbtfs";

// Runs `argv` (searched in PATH), capturing stdout; returns its exit status
// (-1 if it could not start).
int Run(const std::vector<std::string>& argv, std::string* out) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return -1;
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) {
    if (out) out->append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// cbtfs next to this executable (an installed pair, or the build tree's
// tools/ and fuse/), else from PATH.
std::string CbtfsBinary() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir = dir.substr(0, dir.find_last_of('/'));
    for (const std::string& c : {dir + "/cbtfs", dir + "/../fuse/cbtfs"}) {
      if (::access(c.c_str(), X_OK) == 0) return c;
    }
  }
  return "cbtfs";
}

bool IsMountpoint(const std::string& path) {
  struct stat a, b;
  if (::stat(path.c_str(), &a) != 0 || ::stat((path + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

// Mount points below `dir`, deepest first (so that each is unmounted before
// the one it sits on).  libmount reads mountinfo and undoes its escapes.
std::vector<std::string> MountsBelow(const std::string& dir) {
  std::vector<std::string> out;
  std::unique_ptr<libmnt_table, decltype(&mnt_unref_table)> table(
      mnt_new_table_from_file("/proc/self/mountinfo"), &mnt_unref_table);
  std::unique_ptr<libmnt_iter, decltype(&mnt_free_iter)> it(mnt_new_iter(MNT_ITER_FORWARD),
                                                            &mnt_free_iter);
  if (!table || !it) return out;
  const std::string prefix = dir + "/";
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(table.get(), it.get(), &fs) == 0) {
    const char* target = mnt_fs_get_target(fs);
    if (target != nullptr && std::string_view(target).starts_with(prefix)) out.push_back(target);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
  return out;
}

std::string Absolute(const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  char cwd[4096];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return p;
  return std::string(cwd) + "/" + p;
}

int RunUmount(const Globals& g, const po::variables_map& vm) {
  if (!vm.count("dir")) {
    std::fprintf(stderr, "cbt-backup umount: give the directory that mount printed\n");
    return kExitUsage;
  }
  std::string dir = Absolute(vm["dir"].as<std::string>());
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!IsDirectory(JoinPath(dir, kCbtfsDir))) {
    return Fail(Status::InvalidArgument(dir + " was not made by 'cbt-backup mount'"));
  }
  int failed = 0;
  for (const auto& m : MountsBelow(dir)) {
    if (::umount2(m.c_str(), 0) != 0) {
      std::fprintf(stderr, "cbt-backup: cannot unmount %s: %s\n", m.c_str(), std::strerror(errno));
      ++failed;
      continue;
    }
    Info(g, "unmounted " + m);
  }
  if (failed) return kExitFailure;
  auto names = ListDir(dir);
  if (names.ok()) {
    for (const auto& n : *names) ::rmdir(JoinPath(dir, n).c_str());
  }
  if (::rmdir(dir.c_str()) != 0) {
    return Fail(Status::FromErrno(errno, dir + " (not empty?)"));
  }
  return 0;
}

int RunMount(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("mount", vm, {{"vm", "--vm UUID"}, {"point", "--point TIMESTAMP|latest"}})) {
    return kExitUsage;
  }
  const std::string v = vm["vm"].as<std::string>();
  std::string point = vm["point"].as<std::string>();
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  if (point == "latest") {
    auto points = repo->ListPoints(v);
    if (!points.ok()) return Fail(points.status());
    if (points->empty()) return Fail(Status::NotFound("VM " + v + " has no points"));
    point = points->back();
  }
  auto manifest = repo->ReadManifest(v, point);
  if (!manifest.ok()) return Fail(manifest.status());
  std::string dir = vm.count("dir") ? vm["dir"].as<std::string>()
                                    : TempRoot() + "/cbt-backup-" + v.substr(0, 8) + "-" + point;
  dir = Absolute(dir);
  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0) {
    // Someone else's directory (or a link to one) could be swapped or
    // watched while the guest's files are mounted in it.
    if (!S_ISDIR(st.st_mode)) {
      return Fail(Status::InvalidArgument(dir + " is not a directory (a symbolic link?)"));
    }
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return Fail(Status::InvalidArgument(dir +
                                          " must be owned by root and writable by no one else "
                                          "(owner uid " +
                                          std::to_string(st.st_uid) + ", mode " + mode + ")"));
    }
    auto names = ListDir(dir);
    if (!names.ok() || !names->empty()) {
      return Fail(Status::Exists(
          dir + " exists and is not empty (unmount it with 'cbt-backup umount " + dir + "')"));
    }
    if (::chmod(dir.c_str(), 0700) != 0) return Fail(Status::FromErrno(errno, dir));
  } else {
    auto slash = dir.find_last_of('/');
    if (slash > 0) {
      if (Status s = MakeDirs(dir.substr(0, slash)); !s.ok()) return Fail(s);
    }
    // mkdir fails on anything already there, a link included: 0700, ours.
    if (::mkdir(dir.c_str(), 0700) != 0) return Fail(Status::FromErrno(errno, dir));
  }
  const std::string fsdir = JoinPath(dir, kCbtfsDir);
  if (Status s = MakeDir(fsdir); !s.ok()) return Fail(s);
  // A repository on an object store is mounted by its URL (cbtfs reads the
  // same AWS_* settings, and the --ca-cert file as AWS_CA_BUNDLE).
  if (repo->remote() && !g.ca_cert.empty()) ::setenv("AWS_CA_BUNDLE", g.ca_cert.c_str(), 1);
  const std::string repo_abs = repo->remote() ? repo->location() : Absolute(repo->path());
  if (Run({CbtfsBinary(), "mount", repo_abs, fsdir}, nullptr) != 0) {
    ::rmdir(fsdir.c_str());
    ::rmdir(dir.c_str());
    return Fail(Status::IoError("cbtfs could not mount " + repo_abs + " on " + fsdir));
  }
  for (int i = 0; i < 100 && !IsMountpoint(fsdir); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string pdir = JoinPath(JoinPath(fsdir, v), point);
  auto files = image::FilesToProbe([&pdir](const std::string& rel) {
    return ListDir(rel.empty() ? pdir : JoinPath(pdir, rel));
  });
  if (!files.ok()) return Fail(files.status());
  static const std::set<std::string> kMountable = {"ext2", "ext3", "ext4",  "xfs",     "btrfs",
                                                   "vfat", "ntfs", "exfat", "iso9660", "udf"};
  int mounted = 0;
  for (const auto& file : *files) {
    const std::string& f = file.path;
    const std::string path = JoinPath(pdir, f);
    std::string out;
    if (Run({"blkid", "-p", "-o", "value", "-s", "TYPE", path}, &out) != 0) continue;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (!kMountable.count(out)) {
      if (!out.empty()) Info(g, "skipped " + Printable(f) + ": " + Printable(out));
      continue;
    }
    const std::string target = JoinPath(dir, file.stem);
    if (!MakeDir(target).ok()) continue;
    std::string opts = "ro,loop,nosuid,nodev,noexec";
    // Never replay a journal (the file is read-only) and allow two points of
    // one filesystem side by side.
    if (out.rfind("ext", 0) == 0) opts += ",noload";
    if (out == "xfs") opts += ",norecovery,nouuid";
    if (Run({"mount", "-t", out, "-o", opts, path, target}, nullptr) != 0) {
      Info(g, "could not mount " + Printable(f) + " (" + out + ")");
      ::rmdir(target.c_str());
      continue;
    }
    ++mounted;
    Info(g, "mounted " + Printable(f) + " (" + out + ") on " + Printable(target));
  }
  Info(g, std::to_string(mounted) + " filesystem(s) of VM " + v + " point " + point +
              " mounted read-only; undo with: cbt-backup umount " + dir);
  std::printf("%s\n", dir.c_str());
  return 0;
}

}  // namespace

Command MountCommand() {
  return {"mount", "mount every filesystem of a point read-only under a directory (root)",
          "--vm UUID --point TIMESTAMP|latest [--dir DIR]",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "the VM's UUID")(
                "point", po::value<std::string>(), "the point, or 'latest'")(
                "dir", po::value<std::string>(),
                "where to mount (default $TMPDIR or /tmp, cbt-backup-<vm>-<point>)");
          },
          RunMount};
}

Command UmountCommand() {
  return {"umount", "undo 'cbt-backup mount': unmount everything under DIR and remove it", "DIR",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("dir", po::value<std::string>(), "the directory mount printed");
            p.add("dir", 1);
          },
          RunUmount};
}

}  // namespace cbt::cli
