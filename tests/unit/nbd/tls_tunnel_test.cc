// SPDX-License-Identifier: Apache-2.0
//
// The tunnel against a real TLS NBD server (nbdkit, socket-activated on a
// port of our own) whose certificate does not name the address we connect
// to, with libnbd on the plain side as nbd_reader uses it.
#include "nbd/tls_tunnel.h"

#include "testutil.h"

#include "nbd/nbdkit_server.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

using namespace cbt;
using cbt::nbd::TlsTunnel;
using namespace cbt::testing;

namespace {

// What nbdkit's pattern plugin serves: each 8-byte word holds its own
// offset, big-endian.
bool IsPattern(const std::vector<char>& buf, uint64_t offset) {
  for (size_t i = 0; i < buf.size(); ++i) {
    uint64_t word = (offset + i) & ~uint64_t{7};
    auto expect = static_cast<char>(word >> (56 - 8 * ((offset + i) & 7)));
    if (buf[i] != expect) return false;
  }
  return true;
}

// libnbd on the tunnel's plain socket, set up as nbd_reader sets it up.
struct nbd_handle* ConnectThrough(TlsTunnel& tunnel) {
  struct nbd_handle* h = nbd_create();
  REQUIRE(h != nullptr);
  REQUIRE(nbd_set_tls(h, LIBNBD_TLS_DISABLE) == 0);
  REQUIRE(nbd_set_export_name(h, "") == 0);
  REQUIRE(nbd_set_request_structured_replies(h, false) == 0);
  int rc = nbd_connect_socket(h, tunnel.ReleaseClientFd());
  INFO((nbd_get_error() ? nbd_get_error() : ""));
  REQUIRE(rc == 0);
  return h;
}

}  // namespace

TEST_CASE("TlsTunnel: pins a certificate that does not name the address, libnbd reads through it",
          "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  // The premise: libnbd's name check against the address would fail.
  CHECK_FALSE(nbd::CertificateNames(pem, "127.0.0.1"));
  CHECK(nbd::CertificateNames(pem, "192.0.2.1"));
  CHECK(nbd::CertificateNames(pem, "xapi-host.example"));
  CHECK_FALSE(nbd::CertificateNames(pem, "other.example"));
  CHECK_FALSE(nbd::CertificateNames("not a certificate", "192.0.2.1"));

  constexpr uint64_t kSize = 8 * 1024 * 1024;
  Nbdkit server(RequireTls(dir.Sub("tls")), "pattern " + std::to_string(kSize),
                dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), pem, 10);
  INFO(tunnel.status().message());
  REQUIRE(tunnel.ok());
  struct nbd_handle* h = ConnectThrough(**tunnel);
  CHECK(nbd_get_size(h) == static_cast<int64_t>(kSize));
  // Requests as large as xapi-nbd's, and small ones at odd offsets.
  std::vector<char> buf(2 * 1024 * 1024);
  for (uint64_t off = 0; off < kSize; off += buf.size()) {
    REQUIRE(nbd_pread(h, buf.data(), buf.size(), off, 0) == 0);
    CHECK(IsPattern(buf, off));
  }
  std::vector<char> small(1000);
  REQUIRE(nbd_pread(h, small.data(), small.size(), 12345, 0) == 0);
  CHECK(IsPattern(small, 12345));
  // A clean disconnect: NBD_CMD_DISC goes through, the server's close
  // comes back.
  CHECK(nbd_shutdown(h, 0) == 0);
  nbd_close(h);
  tunnel->reset();
}

TEST_CASE("TlsTunnel: writes and many requests in flight pass both ways", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  Nbdkit server(RequireTls(dir.Sub("tls")), "memory 4M", dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), pem, 10);
  INFO(tunnel.status().message());
  REQUIRE(tunnel.ok());
  struct nbd_handle* h = ConnectThrough(**tunnel);
  REQUIRE(nbd_get_size(h) == 4 * 1024 * 1024);
  std::vector<std::vector<char>> blocks;
  for (uint32_t i = 0; i < 64; ++i) blocks.push_back(testing::Block(i));  // 64 x 64 KiB
  // Waits for every command queued; NBD orders nothing among commands in
  // flight, so the reads are queued only once the writes are done.
  auto wait_all = [h](const std::vector<int64_t>& cookies) {
    for (int64_t c : cookies) {
      int done;
      while ((done = nbd_aio_command_completed(h, c)) == 0) REQUIRE(nbd_poll(h, -1) >= 0);
      REQUIRE(done == 1);
    }
  };
  std::vector<int64_t> writes;
  for (size_t i = 0; i < blocks.size(); ++i) {
    writes.push_back(nbd_aio_pwrite(h, blocks[i].data(), blocks[i].size(), i * blocks[i].size(),
                                    NBD_NULL_COMPLETION, 0));
    REQUIRE(writes.back() > 0);
  }
  wait_all(writes);
  std::vector<std::vector<char>> back(blocks.size(), std::vector<char>(blocks[0].size()));
  std::vector<int64_t> reads;
  for (size_t i = 0; i < back.size(); ++i) {
    reads.push_back(nbd_aio_pread(h, back[i].data(), back[i].size(), i * back[i].size(),
                                  NBD_NULL_COMPLETION, 0));
    REQUIRE(reads.back() > 0);
  }
  wait_all(reads);
  for (size_t i = 0; i < blocks.size(); ++i) CHECK(back[i] == blocks[i]);
  CHECK(nbd_shutdown(h, 0) == 0);
  nbd_close(h);
}

TEST_CASE("TlsTunnel: closing the tunnel first fails libnbd's requests, does not hang them",
          "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  Nbdkit server(RequireTls(dir.Sub("tls")), "pattern 1M", dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), pem, 10);
  REQUIRE(tunnel.ok());
  struct nbd_handle* h = ConnectThrough(**tunnel);
  tunnel->reset();
  std::vector<char> buf(4096);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 0, 0) == -1);
  nbd_close(h);
}

TEST_CASE("TlsTunnel: another certificate, even with the same names, is refused", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  MakeCert(dir.Sub("tls"));
  const std::string other = MakeCert(dir.Sub("other"));  // same names, another key
  Nbdkit server(RequireTls(dir.Sub("tls")), "pattern 1M", dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), other, 10);
  REQUIRE_FALSE(tunnel.ok());
  INFO(tunnel.status().message());
  CHECK(tunnel.status().code() == Status::Code::kNotSupported);
  CHECK(tunnel.status().message().find("not the one the XenAPI handed out") != std::string::npos);
}

TEST_CASE("TlsTunnel: a server without TLS is refused clearly", "[nbd]") {
  CBT_SKIP_WITHOUT_NBDKIT();
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  Nbdkit server("--tls=off", "pattern 1M", dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), pem, 10);
  REQUIRE_FALSE(tunnel.ok());
  INFO(tunnel.status().message());
  CHECK(tunnel.status().code() == Status::Code::kNotSupported);
  CHECK(tunnel.status().message().find("refused TLS") != std::string::npos);
}

TEST_CASE("TlsTunnel: unreachable, silent and bad input are errors, not hangs", "[nbd]") {
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));  // any will do: these fail before TLS
  // Refused: a port nobody listens on any more.
  int port = 0;
  ::close(Listen(&port));
  auto refused = TlsTunnel::Open("127.0.0.1", port, pem, 5);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Status::Code::kIoError);
  CHECK(refused.status().message().find(std::to_string(port)) != std::string::npos);

  // Silent: the kernel accepts the connection, nobody sends a greeting.
  int silent = Listen(&port);
  auto timed_out = TlsTunnel::Open("127.0.0.1", port, pem, 1);
  ::close(silent);
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.status().code() == Status::Code::kIoError);
  CHECK(timed_out.status().message().find("timed out") != std::string::npos);

  auto no_cert = TlsTunnel::Open("127.0.0.1", port, "not a certificate", 1);
  REQUIRE_FALSE(no_cert.ok());
  CHECK(no_cert.status().code() == Status::Code::kInvalidArgument);
}
