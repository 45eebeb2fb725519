// SPDX-License-Identifier: Apache-2.0
#include "repo/layout.h"

#include <catch2/catch.hpp>

using namespace cbt::repo;

TEST_CASE("Layout: timestamps round-trip and reject impossible dates", "[repo]") {
  CHECK(IsTimestamp("20261126T184505Z"));
  CHECK(FormatTimestamp(*ParseTimestamp("20261126T184505Z")) == "20261126T184505Z");
  CHECK_FALSE(IsTimestamp("20260231T000000Z"));
  CHECK_FALSE(IsTimestamp("2026-11-26T18:45:05Z"));
  CHECK_FALSE(IsTimestamp("20261126T184505"));
}

TEST_CASE("Layout: UUIDs are lower-case 8-4-4-4-12", "[repo]") {
  CHECK(IsUuid("0f4b6c1e-2b7a-4c59-9d4e-6a3b2c1d0e9f"));
  CHECK_FALSE(IsUuid("0F4B6C1E-2B7A-4C59-9D4E-6A3B2C1D0E9F"));
  CHECK_FALSE(IsUuid("0f4b6c1e2b7a4c599d4e6a3b2c1d0e9f"));
  CHECK_FALSE(IsUuid("../etc"));
}

TEST_CASE("Layout: temporary point names carry the writer's pid", "[repo]") {
  std::string name = TempPointName("20261126T184505Z", 4242);
  REQUIRE(ParseTempPointName(name));
  CHECK(*ParseTempPointName(name) == 4242);
  CHECK_FALSE(ParseTempPointName("20261126T184505Z"));
  CHECK_FALSE(ParseTempPointName(".tmp-20261126T184505Z-"));
}
