// SPDX-License-Identifier: Apache-2.0
//
// nbd::Reader against a real NBD server: nbdkit, socket-activated on a port
// of our own, serving its pattern plugin (every 8-byte word holds its own
// offset), so any byte read can be checked without a reference copy.  The
// tests cover what a backup relies on: every requested byte arrives once
// and right whatever the order and the number of connections, a pool host
// that refuses is skipped for the next, a certificate other than the one
// handed out is refused on both TLS paths (libnbd's own, and the tunnel
// used where the certificate does not name the address), and a server that
// stops answering fails the read in bounded time instead of hanging it.
#include "nbd/nbd_reader.h"

#include "testutil.h"

#include "nbd/nbdkit_server.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace cbt;
using cbt::nbd::Endpoint;
using cbt::nbd::Extent;
using cbt::nbd::Reader;
using cbt::nbd::ReaderOptions;
using namespace cbt::testing;

namespace {

using Clock = std::chrono::steady_clock;

// The byte nbdkit's pattern plugin serves at `offset`.
char PatternByte(uint64_t offset) {
  return static_cast<char>((offset & ~uint64_t{7}) >> (56 - 8 * (offset & 7)));
}

Endpoint Local(int port, const std::string& cert = "") {
  Endpoint e;
  e.address = "127.0.0.1";
  e.port = port;
  e.exportname = "/OpaqueRef:session?vdi=OpaqueRef:vdi";
  e.cert = cert;
  return e;
}

ReaderOptions Plain() {
  ReaderOptions o;
  o.require_tls = false;
  return o;
}

// Reads `extents` through `reader` and checks that each byte arrives
// exactly once, holding the pattern; returns how many threads called the
// sink.
size_t ReadAndCheck(Reader& reader, const std::vector<Extent>& extents) {
  std::mutex mu;
  const uint64_t before = reader.bytes_read();
  std::vector<uint8_t> seen(reader.size(), 0);
  std::set<std::thread::id> threads;
  bool wrong = false;
  auto st = reader.Read(extents, [&](uint64_t offset, const char* data, size_t length) {
    std::lock_guard<std::mutex> g(mu);
    threads.insert(std::this_thread::get_id());
    for (size_t i = 0; i < length; ++i) {
      wrong |= data[i] != PatternByte(offset + i);
      ++seen[offset + i];
    }
    return Status::Ok();
  });
  INFO(st.message());
  REQUIRE(st.ok());
  CHECK_FALSE(wrong);
  std::vector<uint8_t> expected(reader.size(), 0);
  uint64_t total = 0;
  for (const auto& e : extents) {
    for (uint64_t i = 0; i < e.length; ++i) expected[e.offset + i] = 1;
    total += e.length;
  }
  size_t mismatches = 0;  // counted: Catch would print two 8 MiB vectors
  for (size_t i = 0; i < seen.size(); ++i) mismatches += seen[i] != expected[i];
  CHECK(mismatches == 0);
  CHECK(reader.bytes_read() - before == total);
  return threads.size();
}

constexpr uint64_t kSize = 8 * 1024 * 1024;

// Scattered, unaligned, out of order, one spanning several requests.
const std::vector<Extent> kExtents = {{7 * 1024 * 1024, 65536},
                                      {100003, 1000},
                                      {1 * 1024 * 1024, 3 * 1024 * 1024 + 17},
                                      {0, 65536},
                                      {kSize - 5, 5},
                                      {5 * 1024 * 1024 + 3, 200000},
                                      {6 * 1024 * 1024, 512 * 1024 - 1}};

}  // namespace

TEST_CASE("NbdReader: extents arrive right and once, over several connections", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  Nbdkit server("pattern " + std::to_string(kSize), dir.Sub("nbdkit.log"));
  ReaderOptions o = Plain();
  o.connections = 4;
  o.max_request = 64 * 1024;  // many requests, so every connection has some
  auto reader = Reader::Connect({Local(server.port())}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  CHECK((*reader)->size() == kSize);
  CHECK(ReadAndCheck(**reader, kExtents) > 1);
  // The reader can be used again, here for the whole disk.
  CHECK(ReadAndCheck(**reader, {{0, kSize}}) >= 1);
}

TEST_CASE("NbdReader: TLS with the certificate handed out, named or not by the address", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  // libnbd checks a certificate that names the address; the tunnel pins
  // one that does not (a dedicated NBD network).
  const std::string san = GENERATE(testing::kSanNamingLocal, testing::kSanNotNamingLocal);
  INFO(san);
  const std::string pem = MakeCert(dir.Sub("tls"), san);
  Nbdkit server(RequireTls(dir.Sub("tls")) + " pattern " + std::to_string(kSize),
                dir.Sub("nbdkit.log"));
  ReaderOptions o;
  o.connections = 2;
  auto reader = Reader::Connect({Local(server.port(), pem)}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  CHECK((*reader)->size() == kSize);
  ReadAndCheck(**reader, kExtents);
}

namespace {

bool EmptyDir(const std::string& path) {
  auto names = ListDir(path);
  return names.ok() && names->empty();
}

}  // namespace

TEST_CASE("NbdReader: the CA directory for libnbd lives only while connections open", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  const std::string tmp = dir.Sub("tmp");
  REQUIRE(MakeDir(tmp).ok());
  ScopedEnv tmpdir("TMPDIR", tmp);
  // A process killed while it reads (for hours, on a big disk) must not
  // leave certificates behind in TMPDIR.
  const std::string pem = MakeCert(dir.Sub("tls"), testing::kSanNamingLocal);
  Nbdkit server(RequireTls(dir.Sub("tls")) + " pattern " + std::to_string(kSize),
                dir.Sub("nbdkit.log"));
  ReaderOptions o;
  o.connections = 3;
  {
    auto reader = Reader::Connect({Local(server.port(), pem)}, o);
    INFO(reader.status().message());
    REQUIRE(reader.ok());
    CHECK(EmptyDir(tmp));
    ReadAndCheck(**reader, kExtents);
    CHECK(EmptyDir(tmp));
  }
  // Nor does a handshake that fails.
  const std::string other = MakeCert(dir.Sub("other"), testing::kSanNamingLocal);
  o.timeout_seconds = 10;
  auto refused = Reader::Connect({Local(server.port(), other)}, o);
  CHECK_FALSE(refused.ok());
  CHECK(EmptyDir(tmp));
}

TEST_CASE("NbdReader: an endpoint that refuses is skipped for the next", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  Nbdkit server("pattern " + std::to_string(kSize), dir.Sub("nbdkit.log"));
  ReaderOptions o = Plain();
  o.connections = 3;
  auto reader = Reader::Connect({Local(ClosedPort()), Local(server.port())}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  ReadAndCheck(**reader, kExtents);
}

TEST_CASE("NbdReader: no endpoint answering is an IoError naming the last one tried", "[nbd]") {
  const int first = ClosedPort();
  const int second = ClosedPort();
  auto reader = Reader::Connect({Local(first), Local(second)}, Plain());
  REQUIRE_FALSE(reader.ok());
  INFO(reader.status().message());
  CHECK(reader.status().code() == Status::Code::kIoError);
  CHECK(reader.status().message().find("127.0.0.1:" + std::to_string(second)) != std::string::npos);

  CHECK(Reader::Connect({}, Plain()).status().code() == Status::Code::kInvalidArgument);
  // A server offering no certificate needs the caller's consent.
  auto no_tls = Reader::Connect({Local(first)}, ReaderOptions{});
  CHECK(no_tls.status().code() == Status::Code::kNotSupported);
}

TEST_CASE("NbdReader: another certificate than the one handed out is NotSupported", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  // The same names with another key: on libnbd's path (the certificate
  // names 127.0.0.1) and on the tunnel's (it does not).
  const std::string san = GENERATE(testing::kSanNamingLocal, testing::kSanNotNamingLocal);
  INFO(san);
  MakeCert(dir.Sub("tls"), san);
  const std::string other = MakeCert(dir.Sub("other"), san);
  Nbdkit server(RequireTls(dir.Sub("tls")) + " pattern 1M", dir.Sub("nbdkit.log"));
  ReaderOptions o;
  o.timeout_seconds = 10;
  auto reader = Reader::Connect({Local(server.port(), other)}, o);
  REQUIRE_FALSE(reader.ok());
  INFO(reader.status().message());
  CHECK(reader.status().code() == Status::Code::kNotSupported);
  CHECK(reader.status().message().find("127.0.0.1") != std::string::npos);
}

TEST_CASE("NbdReader: a server refusing TLS although a certificate came with it (insecure_nbd)",
          "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  // get_nbd_info hands out the host certificate whether or not the pool
  // serves TLS: on libnbd's path and on the tunnel's.
  const std::string san = GENERATE(testing::kSanNamingLocal, testing::kSanNotNamingLocal);
  INFO(san);
  const std::string pem = MakeCert(dir.Sub("tls"), san);
  Nbdkit server("--tls=off pattern " + std::to_string(kSize), dir.Sub("nbdkit.log"));
  ReaderOptions o;
  o.timeout_seconds = 10;
  auto refused = Reader::Connect({Local(server.port(), pem)}, o);
  REQUIRE_FALSE(refused.ok());
  INFO(refused.status().message());
  CHECK(refused.status().code() == Status::Code::kNotSupported);
  CHECK(refused.status().message().find("--no-tls") != std::string::npos);
  // With --no-tls the same endpoint is read in plain text.
  o.require_tls = false;
  o.connections = 2;
  auto reader = Reader::Connect({Local(server.port(), pem)}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  ReadAndCheck(**reader, kExtents);
}

TEST_CASE("NbdReader: a server that stops answering fails the read in bounded time", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  Nbdkit server("--filter=delay pattern 1M delay-read=3", dir.Sub("nbdkit.log"));
  ReaderOptions o = Plain();
  o.connections = 1;
  o.timeout_seconds = 1;
  o.attempts = 2;
  auto reader = Reader::Connect({Local(server.port())}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  const auto start = Clock::now();
  Status st = (*reader)->Read({{0, 65536}}, [](uint64_t, const char*, size_t) {
    return Status::Ok();  // never reached: every answer comes too late
  });
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  INFO(st.message());
  CHECK(st.code() == Status::Code::kIoError);
  CHECK(st.message().find("after 2 attempts") != std::string::npos);
  CHECK(st.message().find("no answer within 1 s") != std::string::npos);
  CHECK(took < 15.0);
}

TEST_CASE("NbdReader: a request that stalls is read again on a new connection, delivered once",
          "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  constexpr uint64_t kDisk = 1024 * 1024;
  std::string content;
  for (uint32_t i = 0; content.size() < kDisk; ++i) {
    auto b = testing::Block(i);
    content.append(b.data(), b.size());
  }
  REQUIRE(WriteNewFile(dir.Sub("disk"), content).ok());
  // The first read the server gets sleeps past the reader's timeout; every
  // other one, on any connection, is answered at once.
  const std::string pread = "if mkdir " + dir.Sub("stalled") +
                            " 2>/dev/null; then sleep 3; fi; exec dd if=" + dir.Sub("disk") +
                            " skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none";
  Nbdkit server("eval get_size='echo " + std::to_string(kDisk) +
                    "' thread_model='echo parallel' pread='" + pread + "'",
                dir.Sub("nbdkit.log"));
  ReaderOptions o = Plain();
  o.connections = 1;
  o.max_request = 64 * 1024;
  o.timeout_seconds = 1;
  o.attempts = 3;
  auto reader = Reader::Connect({Local(server.port())}, o);
  INFO(reader.status().message());
  REQUIRE(reader.ok());
  std::mutex mu;
  std::vector<int> deliveries(kDisk / o.max_request, 0);
  bool wrong = false;
  const auto start = Clock::now();
  Status st = (*reader)->Read({{0, kDisk}}, [&](uint64_t offset, const char* data, size_t length) {
    std::lock_guard<std::mutex> g(mu);
    ++deliveries.at(offset / o.max_request);
    wrong |= length != o.max_request || content.compare(offset, length, data, length) != 0;
    return Status::Ok();
  });
  INFO(st.message());
  REQUIRE(st.ok());
  CHECK(std::chrono::duration<double>(Clock::now() - start).count() < 15.0);
  CHECK_FALSE(wrong);
  CHECK(deliveries == std::vector<int>(deliveries.size(), 1));
  CHECK((*reader)->bytes_read() == kDisk);
}

TEST_CASE("NbdReader: the sink's error stops the read and is returned", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  Nbdkit server("pattern " + std::to_string(kSize), dir.Sub("nbdkit.log"));
  ReaderOptions o = Plain();
  o.connections = 2;
  o.max_request = 64 * 1024;
  auto reader = Reader::Connect({Local(server.port())}, o);
  REQUIRE(reader.ok());
  std::atomic<int> calls{0};
  Status st = (*reader)->Read({{0, kSize}}, [&calls](uint64_t, const char*, size_t) {
    return ++calls == 3 ? Status::NoSpace("disk full") : Status::Ok();
  });
  CHECK(st.code() == Status::Code::kNoSpace);
  CHECK(st.message() == "disk full");
  // Stopped early: the workers hold at most a few requests each in flight.
  CHECK(calls.load() < static_cast<int>(kSize / (64 * 1024)));
}

TEST_CASE("NbdReader: HostOfAddress drops an IPv6 prefix and brackets", "[nbd]") {
  CHECK(nbd::HostOfAddress("192.0.2.5") == "192.0.2.5");
  CHECK(nbd::HostOfAddress("fd00::5/64") == "fd00::5");
  CHECK(nbd::HostOfAddress("[fd00::5]") == "fd00::5");
  CHECK(nbd::HostOfAddress("xapi-host.example") == "xapi-host.example");
}
