// SPDX-License-Identifier: Apache-2.0
//
// The run record: the last attempt replaces the previous one, the last
// failure survives later successes, and a damaged or planted record is an
// error for readers and is replaced by the next writer.
#include "repo/run_record.h"

#include "testutil.h"

#include "repo/layout.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <unistd.h>

using namespace cbt::repo;
using cbt::testing::TempRepository;

namespace {

const std::string kVm = "11111111-1111-4111-8111-111111111111";

RunAttempt Attempt(const std::string& time, bool ok, const std::string& error = "") {
  RunAttempt a;
  a.time = time;
  a.ok = ok;
  a.error = error;
  a.point = ok ? time : "";
  a.job = "nightly";
  a.seconds = 2.5;
  a.bytes_read = 100;
  a.bytes_stored = 50;
  return a;
}

}  // namespace

TEST_CASE("run record: last attempt and last failure") {
  TempRepository t;
  auto none = ReadRunRecord(*t.repo, kVm);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  // A VM without a directory was never resolved: nothing is recorded.
  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261201T010000Z", false, "no such VM")).ok());
  CHECK_FALSE(cbt::PathExists(VmDir(t.repo->path(), kVm)));

  REQUIRE(cbt::MakeDir(VmDir(t.repo->path(), kVm)).ok());
  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261201T010000Z", true)).ok());
  auto r = ReadRunRecord(*t.repo, kVm);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  CHECK((*r)->last.ok);
  CHECK((*r)->last.point == "20261201T010000Z");
  CHECK((*r)->last.job == "nightly");
  CHECK((*r)->last.bytes_read == 100);
  CHECK_FALSE((*r)->failure.has_value());

  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261202T010000Z", false, "NBD read failed")).ok());
  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261203T010000Z", true)).ok());
  r = ReadRunRecord(*t.repo, kVm);
  REQUIRE(r.ok());
  CHECK((*r)->last.time == "20261203T010000Z");
  REQUIRE((*r)->failure.has_value());
  CHECK((*r)->failure->time == "20261202T010000Z");
  CHECK((*r)->failure->error == "NBD read failed");
  CHECK_FALSE((*r)->failure->ok);

  // The record is not a point: listing ignores it.
  auto points = t.repo->ListPoints(kVm);
  REQUIRE(points.ok());
  CHECK(points->empty());
}

TEST_CASE("run record: damage is reported, and replaced by the next writer") {
  TempRepository t;
  const std::string dir = VmDir(t.repo->path(), kVm);
  REQUIRE(cbt::MakeDir(dir).ok());
  const std::string file = dir + "/" + kRunRecordFile;
  for (const std::string bad :
       {"not json", "{}", R"({"last": {"time": "yesterday", "result": "ok"}})",
        R"({"last": {"time": "20261201T010000Z", "result": "maybe"}})",
        R"({"last": {"time": "20261201T010000Z", "result": "ok", "bytes_read": -5}})",
        R"({"last": {"time": "20261201T010000Z", "result": "ok", "point": "../../x"}})"}) {
    ::unlink(file.c_str());
    REQUIRE(cbt::WriteNewFile(file, bad).ok());
    auto r = ReadRunRecord(*t.repo, kVm);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find(file) != std::string::npos);
  }
  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261201T010000Z", false, "x")).ok());
  CHECK(ReadRunRecord(*t.repo, kVm).ok());

  // A symbolic link planted as the record is neither read nor written through.
  cbt::testing::TempDir other;
  const std::string target = other.path() + "/target";
  REQUIRE(cbt::WriteNewFile(target, "{}").ok());
  ::unlink(file.c_str());
  REQUIRE(::symlink(target.c_str(), file.c_str()) == 0);
  CHECK_FALSE(ReadRunRecord(*t.repo, kVm).ok());
  REQUIRE(RecordRun(*t.repo, kVm, Attempt("20261202T010000Z", true)).ok());
  auto text = cbt::ReadFile(target);
  REQUIRE(text.ok());
  CHECK(*text == "{}");  // the link was replaced, its target untouched
  CHECK(ReadRunRecord(*t.repo, kVm).ok());
  CHECK_FALSE(RecordRun(*t.repo, "../etc", Attempt("20261202T010000Z", true)).ok());
}
