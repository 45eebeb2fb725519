// SPDX-License-Identifier: Apache-2.0
#include "nbd/nbdkit_server.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

namespace cbt::testing {

bool HaveNbdkit() { return std::system("command -v nbdkit >/dev/null 2>&1") == 0; }

std::string MakeCert(const std::string& dir, const std::string& san) {
  REQUIRE(MakeDir(dir).ok());
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      " -subj /CN=xapi-host.example -addext subjectAltName=" +
      san + " -keyout " + dir + "/server-key.pem -out " + dir +
      "/server-cert.pem >/dev/null 2>&1 && cp " + dir + "/server-cert.pem " + dir + "/ca-cert.pem";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto pem = ReadFile(dir + "/server-cert.pem");
  REQUIRE(pem.ok());
  return *pem;
}

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

int ClosedPort() {
  int port = 0;
  ::close(Listen(&port));
  return port;
}

Nbdkit::Nbdkit(const std::string& args, const std::string& log) {
  int lfd = Listen(&port_);
  const std::string cmd =
      "LISTEN_PID=$$ LISTEN_FDS=1 exec nbdkit -f --exit-with-parent " + args + " 2>" + log;
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
  WaitReady(log);
}

Nbdkit::~Nbdkit() {
  ::kill(pid_, SIGTERM);
  int status;
  ::waitpid(pid_, &status, 0);
}

// The greeting comes before any TLS, so a throw-away connection tells that
// nbdkit is up; the tests' short connect timeouts then do not count its
// start-up.
void Nbdkit::WaitReady(const std::string& log) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  struct timeval tv = {10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port_));
  REQUIRE(::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0);
  char magic[8];
  const ssize_t n = ::recv(fd, magic, sizeof magic, MSG_WAITALL);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof magic)) {
    auto text = ReadFile(log);
    FAIL("nbdkit did not start: " << (text.ok() ? *text : text.status().message()));
  }
}

}  // namespace cbt::testing
