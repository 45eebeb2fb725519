// SPDX-License-Identifier: Apache-2.0
#include "objstore/s3.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <string>

using namespace cbt;
using namespace cbt::objstore;

namespace {

// Sets an environment variable for the scope of a test, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("ParseS3Url: bucket and prefix, and what is refused") {
  auto u = ParseS3Url("s3://backups/pool-a/night/");
  REQUIRE(u.ok());
  CHECK(u->bucket == "backups");
  CHECK(u->prefix == "pool-a/night");
  CHECK(u->ToString() == "s3://backups/pool-a/night");
  auto bare = ParseS3Url("s3://my.bucket-1");
  REQUIRE(bare.ok());
  CHECK(bare->prefix.empty());
  for (const char* bad :
       {"s3://", "s3://ab", "s3://Upper/x", "s3://-bucket/x", "s3://b_b_b/x", "s3://bucket/a//b",
        "s3://bucket/../x", "s3://bucket/./x", "http://bucket/x", "/srv/repo"}) {
    INFO(bad);
    CHECK(ParseS3Url(bad).status().code() == Status::Code::kInvalidArgument);
  }
  CHECK(IsS3Url("s3://b/x"));
  CHECK_FALSE(IsS3Url("/srv/s3://x"));
}

TEST_CASE("S3 times: HTTP dates, ISO 8601 with fractions, and back") {
  CHECK(ParseHttpTime("Sat, 05 Dec 2026 07:16:04 GMT") == 1796454964);
  CHECK_FALSE(ParseHttpTime("yesterday").has_value());
  CHECK(ParseIsoTime("2026-12-05T07:16:04Z") == 1796454964);
  CHECK(ParseIsoTime("2026-12-05T07:16:04.000000000Z") == 1796454964);
  CHECK_FALSE(ParseIsoTime("2026-12-05T07:16:04+02:00").has_value());
  CHECK(FormatIsoTime(1796454964) == "2026-12-05T07:16:04Z");
}

TEST_CASE("UriEncode: unreserved kept, slash as asked, the rest percent-encoded") {
  CHECK(UriEncode("a-b_c.d~e/f", false) == "a-b_c.d~e/f");
  CHECK(UriEncode("a/b", true) == "a%2Fb");
  CHECK(UriEncode("x y+z=", false) == "x%20y%2Bz%3D");
}

TEST_CASE("SettingsFromEnvironment follows the AWS command line") {
  cbt::testing::TempDir dir;
  ScopedEnv home("HOME", dir.path().c_str());
  ScopedEnv key("AWS_ACCESS_KEY_ID", nullptr);
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
  ScopedEnv token("AWS_SESSION_TOKEN", nullptr);
  ScopedEnv region("AWS_REGION", nullptr);
  ScopedEnv dregion("AWS_DEFAULT_REGION", nullptr);
  ScopedEnv endpoint("AWS_ENDPOINT_URL", nullptr);
  ScopedEnv endpoint_s3("AWS_ENDPOINT_URL_S3", nullptr);
  ScopedEnv profile("AWS_PROFILE", nullptr);
  ScopedEnv creds("AWS_SHARED_CREDENTIALS_FILE", nullptr);
  ScopedEnv config("AWS_CONFIG_FILE", nullptr);
  ScopedEnv bundle("AWS_CA_BUNDLE", nullptr);
  ScopedEnv attempts("AWS_MAX_ATTEMPTS", nullptr);
  ScopedEnv style("CBT_S3_ADDRESSING_STYLE", nullptr);

  auto none = SettingsFromEnvironment("");
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().message().find("no S3 credentials") != std::string::npos);

  REQUIRE(MakeDirs(dir.path() + "/.aws").ok());
  REQUIRE(WriteNewFile(dir.path() + "/.aws/credentials",
                       "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = SDEF\n"
                       "[backup]\naws_access_key_id=AKB\naws_secret_access_key=SB\n"
                       "aws_session_token = TB\n")
              .ok());
  REQUIRE(WriteNewFile(dir.path() + "/.aws/config",
                       "[default]\nregion = eu-west-1\n[profile backup]\nregion = eu-central-1\n"
                       "endpoint_url = https://rgw.example:7480/\n")
              .ok());
  auto def = SettingsFromEnvironment("");
  REQUIRE(def.ok());
  CHECK(def->access_key == "AKDEF");
  CHECK(def->region == "eu-west-1");
  CHECK(def->endpoint.empty());
  CHECK_FALSE(def->path_style);  // AWS itself: virtual-hosted

  {
    ScopedEnv p("AWS_PROFILE", "backup");
    auto b = SettingsFromEnvironment("/etc/ca.pem");
    REQUIRE(b.ok());
    CHECK(b->access_key == "AKB");
    CHECK(b->session_token == "TB");
    CHECK(b->region == "eu-central-1");
    CHECK(b->endpoint == "https://rgw.example:7480");
    CHECK(b->path_style);  // a non-AWS endpoint: path-style
    CHECK(b->ca_cert == "/etc/ca.pem");
  }
  {
    // The environment wins over the files.
    ScopedEnv k("AWS_ACCESS_KEY_ID", "AKENV");
    ScopedEnv s("AWS_SECRET_ACCESS_KEY", "SENV");
    ScopedEnv r("AWS_REGION", "us-west-2");
    ScopedEnv e("AWS_ENDPOINT_URL", "http://127.0.0.1:7480");
    ScopedEnv st("CBT_S3_ADDRESSING_STYLE", "virtual");
    ScopedEnv a("AWS_MAX_ATTEMPTS", "3");
    ScopedEnv ca("AWS_CA_BUNDLE", "/etc/bundle.pem");
    auto e2 = SettingsFromEnvironment("");
    REQUIRE(e2.ok());
    CHECK(e2->access_key == "AKENV");
    CHECK(e2->region == "us-west-2");
    CHECK(e2->endpoint == "http://127.0.0.1:7480");
    CHECK_FALSE(e2->path_style);
    CHECK(e2->attempts == 3);
    CHECK(e2->ca_cert == "/etc/bundle.pem");
  }
}

TEST_CASE("S3Client::Create refuses a malformed endpoint") {
  S3Settings s;
  s.access_key = "a";
  s.secret_key = "b";
  S3Url u{"bucket", ""};
  for (const char* bad : {"ftp://host", "host:7480", "http://", "http://host/path"}) {
    INFO(bad);
    s.endpoint = bad;
    CHECK(S3Client::Create(s, u).status().code() == Status::Code::kInvalidArgument);
  }
  s.endpoint = "http://127.0.0.1:7480";
  CHECK(S3Client::Create(s, u).ok());
}
