// SPDX-License-Identifier: Apache-2.0
//
// Jobs from the config file's [job.NAME] sections: every key, the
// defaults, and a clear error for each mistake an administrator makes.
#include "backup/job.h"

#include <catch2/catch.hpp>

using namespace cbt::backup;
using Entries = std::vector<std::pair<std::string, std::string>>;

TEST_CASE("jobs: every setting of a section") {
  auto jobs = ParseJobs({{"job.nightly.all", "true"},
                         {"job.nightly.exclude", "test-vm"},
                         {"job.nightly.exclude", "scratch"},
                         {"job.nightly.jobs", "4"},
                         {"job.nightly.host-connections", "8"},
                         {"job.nightly.connections", "2"},
                         {"job.nightly.verify", "yes"},
                         {"job.nightly.keep-daily", "7"},
                         {"job.nightly.keep-weekly", "4"},
                         {"job.nightly.repo", "/srv/backup"},
                         {"job.nightly.metrics-file", "/var/lib/node/cbt.prom"},
                         {"job.db_only.vm", "db1"},
                         {"job.db_only.tag", "database"}});
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 2);
  const Job& db = (*jobs)[0];  // sorted by name
  CHECK(db.name == "db_only");
  CHECK(db.selection.vms == std::vector<std::string>{"db1"});
  CHECK(db.selection.tags == std::vector<std::string>{"database"});
  CHECK(db.jobs == 1);
  CHECK(db.host_connections == 16);
  CHECK(db.connections == 4);
  CHECK(db.keep.empty());
  const Job& n = (*jobs)[1];
  CHECK(n.selection.all);
  CHECK(n.selection.exclude == std::vector<std::string>{"test-vm", "scratch"});
  CHECK(n.jobs == 4);
  CHECK(n.host_connections == 8);
  CHECK(n.connections == 2);
  CHECK(n.verify);
  CHECK_FALSE(n.full);
  CHECK(n.keep.daily == 7);
  CHECK(n.keep.weekly == 4);
  CHECK(n.keep.last == 0);
  CHECK(n.repo == "/srv/backup");
  CHECK(n.metrics_file == "/var/lib/node/cbt.prom");
  CHECK(FindJob(*jobs, "nightly").ok());
  auto missing = FindJob(*jobs, "weekly");
  REQUIRE(missing.status().IsNotFound());
  CHECK(missing.status().message().find("db_only, nightly") != std::string::npos);
}

TEST_CASE("jobs: mistakes are refused, naming the key") {
  auto err = [](const Entries& e) {
    auto r = ParseJobs(e);
    REQUIRE_FALSE(r.ok());
    return r.status().message();
  };
  CHECK(err({{"job.a.all", "true"}, {"job.a.keep-dialy", "7"}}).find("job.a.keep-dialy") !=
        std::string::npos);
  CHECK(err({{"job.a.all", "maybe"}}).find("true or false") != std::string::npos);
  CHECK(err({{"job.a.all", "true"}, {"job.a.jobs", "0"}}).find("1 to 64") != std::string::npos);
  CHECK(err({{"job.a.all", "true"}, {"job.a.jobs", "4x"}}).find("job.a.jobs") != std::string::npos);
  CHECK(err({{"job.a.all", "true"}, {"job.a.host-connections", "17"}}).find("1 to 16") !=
        std::string::npos);
  CHECK(err({{"job.a.all", "true"}, {"job.a.keep-last", "-1"}}).find("job.a.keep-last") !=
        std::string::npos);
  CHECK(err({{"job.a.exclude", "x"}}).find("selects no VM") != std::string::npos);
  CHECK(err({{"job.a.vm", ""}}).find("empty") != std::string::npos);
  CHECK(err({{"job.bad name.all", "true"}}).find("job name") != std::string::npos);
  CHECK(err({{"job.all", "true"}}).find("[job.NAME]") != std::string::npos);
  CHECK(err({{"jobx.a.all", "true"}}).find("unknown setting") != std::string::npos);
  CHECK(ParseJobs({}).ok());
  CHECK(IsJobName("nightly-01_a"));
  CHECK_FALSE(IsJobName("a.b"));
  CHECK_FALSE(IsJobName("../x"));
  CHECK_FALSE(IsJobName(std::string(65, 'a')));
}
