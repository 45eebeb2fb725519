// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "repo/layout.h"
#include "util/clock.h"
#include "util/file.h"

#include <sys/prctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>

namespace cbt::cli {

bool MissingOption(const std::string& command, const po::variables_map& vm,
                   std::initializer_list<Required> required) {
  for (const Required& r : required) {
    if (!vm.count(r.name)) {
      std::fprintf(stderr, "cbt-backup %s: %s is required\n", command.c_str(), r.shown);
      return true;
    }
  }
  return false;
}

int Fail(const Status& status) {
  std::fprintf(stderr, "cbt-backup: %s\n", status.message().c_str());
  return status.code() == Status::Code::kBusy ? kExitBusy : kExitFailure;
}

Result<repo::Repository> OpenRepo(const Globals& g, bool create) {
  return repo::Repository::OpenAny(g.repo, create, g.ca_cert);
}

void WarnInterruptedDeletes(const repo::Repository& repo) {
  auto vms = repo.ListVms();
  if (!vms.ok()) return;
  for (const auto& vm : *vms) {
    const std::string journal = JoinPath(repo::VmDir(repo.path(), vm), repo::kJournalFile);
    if (!PathExists(journal)) continue;
    std::fprintf(stderr,
                 "cbt-backup: warning: a delete or prune of VM %s was interrupted (%s); the next "
                 "backup, prune or delete of that VM finishes it\n",
                 vm.c_str(), journal.c_str());
  }
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

namespace cbt::cli {

namespace {

Result<std::string> ReadPassword(const Globals& g) {
  if (!g.password_file.empty()) {
    struct stat st;
    if (::stat(g.password_file.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      std::fprintf(stderr,
                   "cbt-backup: warning: password file %s can be read by other users (mode %04o); "
                   "chmod 600 it\n",
                   g.password_file.c_str(), static_cast<unsigned>(st.st_mode & 07777));
    }
    auto text = ReadUserFile(g.password_file);
    if (!text.ok()) return text.status().WithContext("--password-file");
    std::string pw = *text;
    while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
    return pw;
  }
  if (const char* env = std::getenv("CBT_PASSWORD"); env != nullptr) return std::string(env);
  if (::isatty(STDIN_FILENO)) {
    // Prompt without echo, as ssh and sudo do.
    std::fprintf(stderr, "Password for %s: ", g.user.c_str());
    struct termios old_t;
    bool restore = ::tcgetattr(STDIN_FILENO, &old_t) == 0;
    if (restore) {
      struct termios t = old_t;
      t.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
    }
    std::string pw;
    std::getline(std::cin, pw);
    if (restore) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old_t);
    std::fprintf(stderr, "\n");
    return pw;
  }
  return Status::InvalidArgument(
      "no password: put it in a file (mode 0600) and pass --password-file FILE, or set "
      "CBT_PASSWORD");
}

}  // namespace

Result<std::unique_ptr<xapi::Session>> Login(const Globals& g) {
  if (g.server.empty()) {
    return Status::InvalidArgument(
        "no server: pass --server URL (the pool master) or set server= in the config file");
  }
  // Before the password is in memory: no core dump, and no ptrace attach
  // by anyone but root, may read it.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // Asked once per process: a backup of many VMs logs in once per worker,
  // and a person at the terminal types the password once.
  static std::mutex mu;
  static std::optional<std::string> asked;
  std::string password;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!asked) {
      CBT_ASSIGN_OR_RETURN(std::string pw, ReadPassword(g));
      asked = std::move(pw);
    }
    password = *asked;
  }
  xapi::ConnectOptions o;
  o.server = g.server;
  o.http.ca_cert = g.ca_cert;
  o.http.allow_plaintext = g.allow_plaintext;
  o.http.stall_seconds = g.http_timeout;
  o.http.call_seconds = std::max(g.http_timeout, 600);
  o.task_stall_seconds = g.task_timeout;
  o.user = g.user;
  o.password = password;
  auto session = xapi::Session::Login(o);
  // These copies go now (the session keeps none); the one asked for stays
  // while the process may log in again.
  std::fill(password.begin(), password.end(), '\0');
  std::fill(o.password.begin(), o.password.end(), '\0');
  return session;
}

ProgressBar::ProgressBar(const Globals& g)
    : enabled_(::isatty(STDERR_FILENO) && g.verbosity > 0 && !g.json) {}

void ProgressBar::Update(const std::string& label, uint64_t done, uint64_t total) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  double now = MonotonicSeconds();
  if (label != label_) {
    if (drawn_) std::fprintf(stderr, "\n");
    label_ = label;
    start_ = now;
    last_draw_ = 0;
  }
  if (now - last_draw_ < 0.1 && done < total) return;
  last_draw_ = now;
  const int width = 30;
  double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  int fill = static_cast<int>(frac * width);
  double rate = now > start_ ? static_cast<double>(done) / (now - start_) : 0;
  std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %s/%s %s/s ", label.c_str(), fill,
               "##############################", width - fill, "", static_cast<int>(frac * 100),
               HumanBytes(done).c_str(), HumanBytes(total).c_str(),
               HumanBytes(static_cast<uint64_t>(rate)).c_str());
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace cbt::cli
