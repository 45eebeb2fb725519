// SPDX-License-Identifier: Apache-2.0
//
// The per-host NBD connection budget: grants shrink to what is free, a
// request waits while a host has nothing free, a read over several hosts
// is charged on each, and many threads together never exceed the limit.
#include "backup/connection_budget.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using namespace cbt::backup;

TEST_CASE("budget grants what is free, at least one") {
  ConnectionBudget b(8);
  REQUIRE(*b.Acquire({"h1"}, 4) == 4);
  REQUIRE(*b.Acquire({"h1"}, 6) == 4);  // only 4 left
  REQUIRE(b.InUse("h1") == 8);
  REQUIRE(b.InUse("h2") == 0);
  REQUIRE(*b.Acquire({"h2"}, 20) == 8);  // never more than the limit
  b.Release({"h1"}, 4);
  REQUIRE(b.InUse("h1") == 4);
  REQUIRE(*b.Acquire({"h1"}, 0) == 1);  // at least one
  REQUIRE(b.Peak("h1") == 8);
}

TEST_CASE("budget charges every host of an endpoint list once") {
  ConnectionBudget b(4);
  REQUIRE(*b.Acquire({"h1", "h2", "h1"}, 3) == 3);
  REQUIRE(b.InUse("h1") == 3);
  REQUIRE(b.InUse("h2") == 3);
  // h2 has one left: a read over both hosts gets one.
  REQUIRE(*b.Acquire({"h2", "h3"}, 4) == 1);
  REQUIRE(b.InUse("h3") == 1);
  b.Release({"h1", "h2"}, 3);
  b.Release({"h2", "h3"}, 1);
  REQUIRE(b.InUse("h1") == 0);
  REQUIRE(b.InUse("h2") == 0);
  REQUIRE(b.InUse("h3") == 0);
}

TEST_CASE("budget waits while a host has nothing free") {
  ConnectionBudget b(2);
  REQUIRE(*b.Acquire({"h"}, 2) == 2);
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto n = b.Acquire({"h"}, 2);
    REQUIRE(n.ok());
    REQUIRE(*n == 1);
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  REQUIRE_FALSE(got.load());
  b.Release({"h"}, 1);
  t.join();
  REQUIRE(got.load());
  REQUIRE(b.InUse("h") == 2);
}

TEST_CASE("budget holds under many threads") {
  ConnectionBudget b(8);
  std::atomic<int> over{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 12; ++i) {
    ts.emplace_back([&, i] {
      for (int k = 0; k < 200; ++k) {
        auto n = b.Acquire({"h"}, 1 + (i + k) % 5);
        if (!n.ok()) return;
        if (b.InUse("h") > 8) ++over;
        std::this_thread::yield();
        b.Release({"h"}, *n);
      }
    });
  }
  for (auto& t : ts) t.join();
  REQUIRE(over.load() == 0);
  REQUIRE(b.InUse("h") == 0);
  REQUIRE(b.Peak("h") <= 8);
  REQUIRE(b.Peak("h") >= 2);
}
