// SPDX-License-Identifier: Apache-2.0
//
// The tunnel against a real TLS NBD server (nbdkit, socket-activated on a
// port of our own) whose certificate does not name the address we connect
// to, with libnbd on the plain side as nbd_reader uses it.
#include "nbd/tls_tunnel.h"

#include "testutil.h"

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

namespace {

bool HaveNbdkit() { return std::system("command -v nbdkit >/dev/null 2>&1") == 0; }

// A self-signed certificate (and key) in `dir`, laid out as nbdkit wants
// it.  Its names, like a XenServer host's, do not include 127.0.0.1.
std::string MakeCert(const std::string& dir) {
  REQUIRE(MakeDir(dir).ok());
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      " -subj /CN=xapi-host.example"
      " -addext subjectAltName=DNS:xapi-host.example,IP:192.0.2.1"
      " -keyout " +
      dir + "/server-key.pem -out " + dir + "/server-cert.pem >/dev/null 2>&1 && cp " + dir +
      "/server-cert.pem " + dir + "/ca-cert.pem";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto pem = ReadFile(dir + "/server-cert.pem");
  REQUIRE(pem.ok());
  return *pem;
}

// A listening TCP socket on 127.0.0.1 and a free port.
int Listen(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  struct sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) == 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

// nbdkit serving `plugin_args` with TLS from `cert_dir`, handed a socket
// already listening (systemd socket activation), so there is no port race
// and no wait for it to start.
class Nbdkit {
 public:
  Nbdkit(const std::string& tls_args, const std::string& plugin_args, const std::string& log) {
    int lfd = Listen(&port_);
    const std::string cmd = "LISTEN_PID=$$ LISTEN_FDS=1 exec nbdkit -f --exit-with-parent " +
                            tls_args + " " + plugin_args + " 2>" + log;
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      if (lfd == 3) {
        ::fcntl(3, F_SETFD, 0);
      } else {
        ::dup2(lfd, 3);
      }
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(lfd);
  }
  ~Nbdkit() {
    ::kill(pid_, SIGTERM);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  int port() const { return port_; }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
};

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
  if (!HaveNbdkit()) {
    SUCCEED("nbdkit is not installed: skipped");
    return;
  }
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  // The premise: libnbd's name check against the address would fail.
  CHECK_FALSE(nbd::CertificateNames(pem, "127.0.0.1"));
  CHECK(nbd::CertificateNames(pem, "192.0.2.1"));
  CHECK(nbd::CertificateNames(pem, "xapi-host.example"));
  CHECK_FALSE(nbd::CertificateNames(pem, "other.example"));
  CHECK_FALSE(nbd::CertificateNames("not a certificate", "192.0.2.1"));

  constexpr uint64_t kSize = 8 * 1024 * 1024;
  Nbdkit server("--tls=require --tls-certificates=" + dir.Sub("tls"),
                "pattern " + std::to_string(kSize), dir.Sub("nbdkit.log"));
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
  if (!HaveNbdkit()) {
    SUCCEED("nbdkit is not installed: skipped");
    return;
  }
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  Nbdkit server("--tls=require --tls-certificates=" + dir.Sub("tls"), "memory 4M",
                dir.Sub("nbdkit.log"));
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
  if (!HaveNbdkit()) {
    SUCCEED("nbdkit is not installed: skipped");
    return;
  }
  testing::TempDir dir;
  const std::string pem = MakeCert(dir.Sub("tls"));
  Nbdkit server("--tls=require --tls-certificates=" + dir.Sub("tls"), "pattern 1M",
                dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), pem, 10);
  REQUIRE(tunnel.ok());
  struct nbd_handle* h = ConnectThrough(**tunnel);
  tunnel->reset();
  std::vector<char> buf(4096);
  CHECK(nbd_pread(h, buf.data(), buf.size(), 0, 0) == -1);
  nbd_close(h);
}

TEST_CASE("TlsTunnel: another certificate, even with the same names, is refused", "[nbd]") {
  if (!HaveNbdkit()) {
    SUCCEED("nbdkit is not installed: skipped");
    return;
  }
  testing::TempDir dir;
  MakeCert(dir.Sub("tls"));
  const std::string other = MakeCert(dir.Sub("other"));  // same names, another key
  Nbdkit server("--tls=require --tls-certificates=" + dir.Sub("tls"), "pattern 1M",
                dir.Sub("nbdkit.log"));
  auto tunnel = TlsTunnel::Open("127.0.0.1", server.port(), other, 10);
  REQUIRE_FALSE(tunnel.ok());
  INFO(tunnel.status().message());
  CHECK(tunnel.status().code() == Status::Code::kNotSupported);
  CHECK(tunnel.status().message().find("not the one the XenAPI handed out") != std::string::npos);
}

TEST_CASE("TlsTunnel: a server without TLS is refused clearly", "[nbd]") {
  if (!HaveNbdkit()) {
    SUCCEED("nbdkit is not installed: skipped");
    return;
  }
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
