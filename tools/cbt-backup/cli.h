// SPDX-License-Identifier: Apache-2.0
//
// Shared pieces of the cbt-backup command line: global options, the command
// table, and how errors reach the user (one line on stderr, non-zero exit).
// Each command lives in its own cmd_<verb>.cc.
#ifndef CBT_TOOLS_CLI_H_
#define CBT_TOOLS_CLI_H_

#include "backup/pool_run.h"
#include "repo/prune.h"
#include "repo/repository.h"
#include "util/status.h"
#include "xapi/session.h"

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cbt::cli {

namespace po = boost::program_options;

// Exit codes: 0 success, 1 the operation failed (or found damage), 2 usage,
// 3 the VM is locked by another process (try again later).
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitBusy = 3;

struct Globals {
  std::string repo;
  bool json = false;
  int verbosity = 1;  // 0 with -q, 2 with -v
  std::string server;
  std::string user = "root";
  std::string password_file;
  std::string ca_cert;
  bool tls = true;
  bool allow_plaintext = false;  // http:// to the server
  int http_timeout = 120;        // seconds without progress before a transfer fails
  int task_timeout = 600;        // seconds without progress before a task is given up
  int nbd_timeout = 120;         // seconds an NBD request may take
  std::string config_path;       // the config file read ("" if none)
  // The [job.NAME] settings of the config file, as (job.NAME.key, value)
  // in file order; backup::ParseJobs makes jobs of them.
  std::vector<std::pair<std::string, std::string>> job_entries;
};

struct Command {
  std::string name;
  std::string summary;
  std::string usage;  // arguments after the command name
  std::function<void(po::options_description&, po::positional_options_description&)> options;
  std::function<int(const Globals&, const po::variables_map&)> run;
};

Command BackupCommand();
Command DeleteCommand();
Command ExportCommand();
Command ImportLegacyCommand();
Command ImportImageCommand();
Command ListCommand();
Command MountCommand();
Command UmountCommand();
Command PruneCommand();
Command RestoreCommand();
Command VerifyCommand();
Command RunCommand();
Command JobsCommand();
Command StatusCommand();
Command GcCommand();
Command CompressionCommand();
Command ObjectLockCommand();
Command CopyCommand();

// What a required option is called in the message when it is missing:
// {"vm", "--vm UUID"} prints "--vm UUID is required".
struct Required {
  const char* name;
  const char* shown;
};
// True (after printing "cbt-backup COMMAND: <shown> is required" on stderr)
// if any of `required` is missing from `vm`; the caller returns kExitUsage.
bool MissingOption(const std::string& command, const po::variables_map& vm,
                   std::initializer_list<Required> required);

// Prints "cbt-backup: <message>" on stderr and returns kExitBusy for a
// locked VM, else kExitFailure.
int Fail(const Status& status);
// Opens the repository named by the globals.
Result<repo::Repository> OpenRepo(const Globals& g, bool create);
// For commands that only read: warns on stderr about each VM with an
// interrupted delete.  They do not finish it: a journal names points to
// remove, and a reader cannot tell a journal its own tools wrote from one
// planted in a repository that came from elsewhere, so only a command
// that writes the VM (backup, prune, delete, import) replays it.  Readers
// are correct either way, since every state of a delete is readable.
void WarnInterruptedDeletes(const repo::Repository& repo);
// Prints an informational line on stderr unless -q or --json.
void Info(const Globals& g, const std::string& line);
std::string HumanBytes(uint64_t bytes);

// Logs in to the server named by the globals, with the password from
// --password-file, CBT_PASSWORD, or a prompt on the terminal.  The process
// is made non-dumpable first (no core file or ptrace by other users holds
// the password), and a password file that others may read is warned about.
Result<std::unique_ptr<xapi::Session>> Login(const Globals& g);

// ---- Shared by backup and run (cmd_backup.cc) ----

// The VMs `selection` names on the server (backup::SelectVms), after a
// login of its own.
Result<std::vector<backup::VmInfo>> SelectForBackup(const Globals& g,
                                                    const backup::Selection& selection);
// Prints what a dry run would do with `vms` (table, or JSON with --json).
void PrintSelection(const Globals& g, const std::vector<backup::VmInfo>& vms,
                    const std::string& what);
struct PoolOutcome {
  std::vector<backup::VmResult> results;
  double started = 0;  // UNIX time
  double seconds = 0;
};
// Backs up `vms` (backup::RunPool with logins and logging from the globals)
// and records each VM's attempt in the repository (repo/run_record.h)
// under `job`.
PoolOutcome BackupVms(const Globals& g, const repo::Repository& repo,
                      const std::vector<backup::VmInfo>& vms, backup::PoolOptions options,
                      const std::string& job);
// The results as a table on stdout.
void PrintResults(const std::vector<backup::VmResult>& results);
nlohmann::json ResultsJson(const std::vector<backup::VmResult>& results);
// Names each failed VM on stderr; returns how many failed.
int ReportFailures(const std::vector<backup::VmResult>& results);
// Writes the Prometheus textfile of a run (backup/metrics.h); the newest
// point of each VM comes from the repository (none without one).
// `failed`: the run failed beyond its VMs (backup::JobMetrics::failed).
Status WriteRunMetrics(const std::string& path, const repo::Repository* repo,
                       const std::string& job, const PoolOutcome& outcome, uint64_t pruned_points,
                       bool failed);
// Ends a run that failed before its VMs (no server, no repository, no
// selection): with a `metrics` path, writes a textfile saying the run
// failed, listing every VM that an earlier run of `job` attempted (from the
// run records; none without a repository) with its last success, so that
// monitoring still sees their age.  Returns Fail(why).
int FailRun(const Status& why, const std::string& metrics, const repo::Repository* repo,
            const std::string& job, double started, double seconds);

// ---- Shared by prune and run (cmd_prune.cc) ----

struct PruneOutcome {
  Status status;         // OK, or why the VM could not be pruned
  bool decided = false;  // the keep rules were applied (the failure, if any, is the delete's)
  nlohmann::json json;   // {"vm", "keep", "remove", "result"}
  uint64_t removed = 0;  // points removed (or that would be)
  std::vector<std::string> released;  // CBT metadata VDIs to destroy on the server
};
// Applies `policy` to the points of `vm` under its lock, printing the
// decisions (each point's with `list_points`) unless -q or --json; with
// `dry_run` nothing is removed.
PruneOutcome PruneVm(const Globals& g, const repo::Repository& repo, const std::string& vm,
                     const repo::KeepPolicy& policy, bool dry_run, bool list_points = true);
// Releases the stored blocks no point reads any more (repo/gc.h), after
// a prune or delete that removed points; a collection another command
// keeps from running is left to the next one.  Prints one line unless -q
// or --json; returns the result as JSON ({"skipped", ...}) and sets
// *failed on an error (printed).
nlohmann::json CollectAfterDelete(const Globals& g, const repo::Repository& repo, bool* failed);
// With a server, destroys the CBT metadata VDIs of deleted points there;
// returns notes for the user.
std::vector<std::string> ReleaseSnapshots(const Globals& g, const std::vector<std::string>& uuids);

// A one-line progress bar on stderr, drawn only on a terminal and never with
// -q or --json.  Thread-safe.
class ProgressBar {
 public:
  explicit ProgressBar(const Globals& g);
  void Update(const std::string& label, uint64_t done, uint64_t total);
  void Finish();

 private:
  bool enabled_;
  std::mutex mu_;
  double start_ = 0;
  double last_draw_ = 0;
  std::string label_;
  bool drawn_ = false;
};

}  // namespace cbt::cli

#endif  // CBT_TOOLS_CLI_H_
