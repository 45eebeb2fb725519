// SPDX-License-Identifier: Apache-2.0
//
// cbt-backup: the command-line front end.  Global options may stand before
// or after the command (as restic allows); the predecessor's option names
// are accepted as aliases, except --pwd, which is refused because a
// password on the command line is visible to every user of the host.
#include "cli.h"

#include "backup/job.h"
#include "util/interrupt.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <vector>

namespace po = boost::program_options;
using cbt::cli::Command;
using cbt::cli::Globals;

namespace {

std::vector<Command> AllCommands() {
  return {
      cbt::cli::BackupCommand(),       cbt::cli::DeleteCommand(),      cbt::cli::ExportCommand(),
      cbt::cli::ImportLegacyCommand(), cbt::cli::ImportImageCommand(), cbt::cli::ListCommand(),
      cbt::cli::MountCommand(),        cbt::cli::UmountCommand(),      cbt::cli::PruneCommand(),
      cbt::cli::RestoreCommand(),      cbt::cli::VerifyCommand(),      cbt::cli::RunCommand(),
      cbt::cli::JobsCommand(),         cbt::cli::StatusCommand(),      cbt::cli::GcCommand(),
      cbt::cli::CompressionCommand(),  cbt::cli::ObjectLockCommand(),  cbt::cli::CopyCommand()};
}

po::options_description GlobalOptions() {
  po::options_description g("Global options");
  g.add_options()("repo", po::value<std::string>(),
                  "repository directory (default $CBT_REPO or ~/.cbt_backups)")(
      "server", po::value<std::string>(), "pool master URL (https:// unless http:// is given)")(
      "master", po::value<std::string>(), "alias of --server")("user", po::value<std::string>(),
                                                               "XenAPI user name (default root)")(
      "uname", po::value<std::string>(), "alias of --user")(
      "password-file", po::value<std::string>(), "file holding the password (or set CBT_PASSWORD)")(
      "ca-cert", po::value<std::string>(), "PEM file of a CA or certificate to trust for HTTPS")(
      "tls", "use TLS for NBD (default)")("no-tls", "do not use TLS for NBD")(
      "allow-plaintext", "accept an http:// server URL (password and session unencrypted)")(
      "http-timeout", po::value<int>(),
      "seconds an HTTP transfer may make no progress before it fails (default 120)")(
      "task-timeout", po::value<int>(),
      "seconds a server task may make no progress before it is cancelled (default 600)")(
      "nbd-timeout", po::value<int>(), "seconds one NBD read may take (default 120)")(
      "config", po::value<std::string>(), "config file of defaults for these options")(
      "json", "machine-readable output on stdout")("verbose,v", "more messages")(
      "quiet,q", "fewer messages")("help,h", "show help");
  return g;
}

const std::set<std::string> kGlobalsWithValue = {
    "--repo",    "--server", "--master",       "--user",         "--uname",      "--password-file",
    "--ca-cert", "--config", "--http-timeout", "--task-timeout", "--nbd-timeout"};

void PrintUsage(const std::vector<Command>& cmds) {
  std::printf("usage: cbt-backup [global options] COMMAND [options]\n\ncommands:\n");
  for (const auto& c : cmds) std::printf("  %-15s %s\n", c.name.c_str(), c.summary.c_str());
  std::cout << "\n"
            << GlobalOptions() << "\nRun 'cbt-backup COMMAND --help' for a command's options.\n";
}

std::string Home() {
  const char* home = std::getenv("HOME");
  return home && *home ? home : ".";
}

// The config file holds defaults for the global options, one "name = value"
// per line (e.g. server = https://pool-master).  Returns "" if there is none.
std::string ConfigPath(const po::variables_map& vm) {
  if (vm.count("config")) return vm["config"].as<std::string>();
  if (const char* env = std::getenv("CBT_CONFIG"); env && *env) return env;
  for (const std::string& p :
       {Home() + "/.config/cbt-backup/config", std::string("/etc/cbt-backup.conf")}) {
    if (access(p.c_str(), R_OK) == 0) return p;
  }
  return "";
}

po::options_description ConfigOptions() {
  po::options_description c;
  c.add_options()("repo", po::value<std::string>())("server", po::value<std::string>())(
      "user", po::value<std::string>())("password-file", po::value<std::string>())(
      "ca-cert", po::value<std::string>())("tls", po::value<bool>())(
      "allow-plaintext", po::value<bool>())("http-timeout", po::value<int>())(
      "task-timeout", po::value<int>())("nbd-timeout", po::value<int>());
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  cbt::InstallInterruptHandlers();
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "--pwd" || a.rfind("--pwd=", 0) == 0) {
      std::fprintf(stderr,
                   "cbt-backup: --pwd is not accepted: a password on the command line is visible "
                   "to every user of this host; put it in a file (mode 0600) and pass "
                   "--password-file FILE, or set CBT_PASSWORD\n");
      return cbt::cli::kExitUsage;
    }
  }
  const auto cmds = AllCommands();
  int cmd_index = -1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 1 && a[0] == '-') {
      if (kGlobalsWithValue.count(a)) ++i;
      continue;
    }
    cmd_index = static_cast<int>(i);
    break;
  }
  if (cmd_index < 0) {
    bool help = false;
    for (const auto& a : args) help |= (a == "--help" || a == "-h");
    if (args.size() == 1 && args[0] == "--version") {
      std::printf("cbt-backup %s\n", CBT_VERSION);
      return 0;
    }
    PrintUsage(cmds);
    return help ? 0 : cbt::cli::kExitUsage;
  }
  const Command* cmd = nullptr;
  for (const auto& c : cmds) {
    if (c.name == args[cmd_index]) cmd = &c;
  }
  if (cmd == nullptr) {
    std::fprintf(stderr, "cbt-backup: unknown command '%s'; run 'cbt-backup --help'\n",
                 args[cmd_index].c_str());
    return cbt::cli::kExitUsage;
  }
  args.erase(args.begin() + cmd_index);

  po::options_description cmd_opts(cmd->name + " options");
  po::positional_options_description positional;
  cmd->options(cmd_opts, positional);
  po::options_description all;
  all.add(GlobalOptions()).add(cmd_opts);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "cbt-backup %s: %s; run 'cbt-backup %s --help'\n", cmd->name.c_str(),
                 e.what(), cmd->name.c_str());
    return cbt::cli::kExitUsage;
  }
  if (vm.count("help")) {
    std::printf("usage: cbt-backup %s %s\n%s\n\n", cmd->name.c_str(), cmd->usage.c_str(),
                cmd->summary.c_str());
    std::cout << cmd_opts << "\n" << GlobalOptions();
    return 0;
  }

  po::variables_map cfg;
  std::vector<std::pair<std::string, std::string>> job_entries;
  const std::string config = ConfigPath(vm);
  if (!config.empty()) {
    try {
      // `parsed` points into the description, which must outlive it.
      const po::options_description config_options = ConfigOptions();
      auto parsed = po::parse_config_file<char>(config.c_str(), config_options,
                                                /*allow_unregistered=*/true);
      for (const auto& o : parsed.options) {
        if (!o.unregistered) continue;
        // Job sections are read by the commands that use them (run, jobs),
        // so a mistake in one job does not stop every other command.
        if (o.string_key.rfind(cbt::backup::kJobPrefix, 0) != 0) {
          std::fprintf(stderr, "cbt-backup: config file %s: unknown setting '%s'\n", config.c_str(),
                       o.string_key.c_str());
          return cbt::cli::kExitUsage;
        }
        for (const auto& v : o.value) job_entries.emplace_back(o.string_key, v);
        if (o.value.empty()) job_entries.emplace_back(o.string_key, "");
      }
      po::store(parsed, cfg);
    } catch (const po::error& e) {
      std::fprintf(stderr, "cbt-backup: config file %s: %s\n", config.c_str(), e.what());
      return cbt::cli::kExitUsage;
    }
  }
  auto from_cfg = [&cfg](const char* name, std::string* out) {
    if (cfg.count(name)) *out = cfg[name].as<std::string>();
  };
  Globals g;
  g.config_path = config;
  g.job_entries = std::move(job_entries);
  g.repo = Home() + "/.cbt_backups";
  from_cfg("repo", &g.repo);
  if (const char* env = std::getenv("CBT_REPO"); env && *env) g.repo = env;
  if (vm.count("repo")) g.repo = vm["repo"].as<std::string>();
  from_cfg("server", &g.server);
  from_cfg("user", &g.user);
  from_cfg("password-file", &g.password_file);
  from_cfg("ca-cert", &g.ca_cert);
  if (cfg.count("tls")) g.tls = cfg["tls"].as<bool>();
  if (vm.count("server")) g.server = vm["server"].as<std::string>();
  if (vm.count("master")) g.server = vm["master"].as<std::string>();
  if (vm.count("user")) g.user = vm["user"].as<std::string>();
  if (vm.count("uname")) g.user = vm["uname"].as<std::string>();
  if (vm.count("password-file")) g.password_file = vm["password-file"].as<std::string>();
  if (vm.count("ca-cert")) g.ca_cert = vm["ca-cert"].as<std::string>();
  if (vm.count("tls")) g.tls = true;  // over tls = false in the config file
  if (vm.count("no-tls")) g.tls = false;
  if (cfg.count("allow-plaintext")) g.allow_plaintext = cfg["allow-plaintext"].as<bool>();
  if (vm.count("allow-plaintext")) g.allow_plaintext = true;
  for (auto [name, out] : {std::pair<const char*, int*>{"http-timeout", &g.http_timeout},
                           {"task-timeout", &g.task_timeout},
                           {"nbd-timeout", &g.nbd_timeout}}) {
    if (cfg.count(name)) *out = cfg[name].as<int>();
    if (vm.count(name)) *out = vm[name].as<int>();
    if (*out < 1) {
      std::fprintf(stderr, "cbt-backup: --%s must be at least 1 second\n", name);
      return cbt::cli::kExitUsage;
    }
  }
  g.json = vm.count("json") > 0;
  if (vm.count("quiet")) g.verbosity = 0;
  if (vm.count("verbose")) g.verbosity = 2;
  int rc = cmd->run(g, vm);
  // An interrupted command has cleaned up through its error path; exit as a
  // shell reports a killed one.
  if (cbt::Interrupted()) return 128 + cbt::InterruptSignal();
  return rc;
}
