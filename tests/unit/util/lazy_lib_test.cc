// SPDX-License-Identifier: Apache-2.0
#include "util/lazy_lib.h"

#include <catch2/catch.hpp>

#include <unistd.h>

using namespace cbt;

TEST_CASE("LazyLibrary: binds symbols of a library it can load", "[util]") {
  LazyLibrary libc("libc.so.6");
  REQUIRE(libc.Load().ok());
  decltype(&::getpid) fn = nullptr;
  REQUIRE(libc.Bind(&fn, "getpid").ok());
  CHECK(fn() == ::getpid());
  CHECK(libc.Bind(&fn, "no_such_symbol_in_libc").code() == Status::Code::kNotSupported);
}

TEST_CASE("LazyLibrary: a missing library is a clear error, every time", "[util]") {
  LazyLibrary missing("libcbt-no-such-library.so.9");
  Status s = missing.Load();
  CHECK(s.code() == Status::Code::kNotSupported);
  CHECK(s.message().find("libcbt-no-such-library.so.9") != std::string::npos);
  CHECK(missing.Load().code() == Status::Code::kNotSupported);
}
