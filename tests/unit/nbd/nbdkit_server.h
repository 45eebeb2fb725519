// SPDX-License-Identifier: Apache-2.0
//
// A real NBD server for the NBD unit tests: nbdkit, handed a socket that
// already listens on 127.0.0.1 (systemd socket activation), so there is no
// port race, and waited for until it greets.  Also the self-signed
// certificates the TLS tests give it.  Failures are Catch2 failures.
#ifndef CBT_TESTS_UNIT_NBD_NBDKIT_SERVER_H_
#define CBT_TESTS_UNIT_NBD_NBDKIT_SERVER_H_

#include <sys/types.h>

#include <string>

namespace cbt::testing {

bool HaveNbdkit();

// Certificate names (openssl subjectAltName lists) with and without
// 127.0.0.1, the address the tests connect to.
inline const std::string kSanNamingLocal = "DNS:xapi-host.example,IP:127.0.0.1";
inline const std::string kSanNotNamingLocal = "DNS:xapi-host.example,IP:192.0.2.1";

// A self-signed certificate (and key) in `dir`, laid out as nbdkit wants it
// (ca-cert.pem, server-cert.pem, server-key.pem), naming `san`.  Like a
// XenServer host's on an NBD network, the default names do not include
// 127.0.0.1.  Returns the certificate's PEM.
std::string MakeCert(const std::string& dir, const std::string& san = kSanNotNamingLocal);

// nbdkit options that require TLS with the certificate MakeCert wrote in
// `cert_dir`.
inline std::string RequireTls(const std::string& cert_dir) {
  return "--tls=require --tls-certificates=" + cert_dir;
}

// A listening TCP socket on 127.0.0.1; its port in *port.
int Listen(int* port);
// A port on 127.0.0.1 that nobody listens on: connecting is refused.
int ClosedPort();

class Nbdkit {
 public:
  // nbdkit with `args` (TLS options, filters, plugin and its parameters),
  // its messages in `log`.
  Nbdkit(const std::string& args, const std::string& log);
  Nbdkit(const std::string& tls_args, const std::string& plugin_args, const std::string& log)
      : Nbdkit(tls_args + " " + plugin_args, log) {}
  ~Nbdkit();
  Nbdkit(const Nbdkit&) = delete;
  Nbdkit& operator=(const Nbdkit&) = delete;
  int port() const { return port_; }

 private:
  void WaitReady(const std::string& log);
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cbt::testing

// Ends the test case, passed with a note, where nbdkit is not installed.
#define CBT_SKIP_WITHOUT_NBDKIT()                  \
  do {                                             \
    if (!::cbt::testing::HaveNbdkit()) {           \
      SUCCEED("nbdkit is not installed: skipped"); \
      return;                                      \
    }                                              \
  } while (0)

#endif  // CBT_TESTS_UNIT_NBD_NBDKIT_SERVER_H_
