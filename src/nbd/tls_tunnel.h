// SPDX-License-Identifier: Apache-2.0
//
// A TLS tunnel to xapi-nbd that pins the server certificate exactly.
//
// Why: VDI.get_nbd_info hands out the host's self-signed certificate and an
// address.  On a pool with a dedicated NBD network that address is not among
// the certificate's names, and libnbd can only check a certificate against
// the host name it connected to (it checks nothing at all on a socket it is
// handed).  So the tunnel does the NBD greeting up to NBD_OPT_STARTTLS
// itself, completes the TLS handshake with OpenSSL accepting only the very
// certificate the XenAPI handed out (byte for byte; no name check, the pin
// replaces it), and gives libnbd a plain socket on which it sees a fresh
// fixed-newstyle server: the rest of the negotiation (export name, options)
// and the requests pass through unchanged.
//
// Thread-safety: a tunnel relays on its own background thread; the object
// itself is used by one thread.
#ifndef CBT_NBD_TLS_TUNNEL_H_
#define CBT_NBD_TLS_TUNNEL_H_

#include "util/status.h"

#include <memory>
#include <string>
#include <thread>

namespace cbt::nbd {

// True if the (first) certificate in `cert_pem` is valid for `host`: an IP
// subject alternative name for an IP literal, else a DNS name (wildcards as
// a whole leftmost label; the subject CN is not consulted).  Deliberately no
// more lenient than libnbd's own check, so a caller can let libnbd do TLS
// when this is true and use a TlsTunnel when it is false.  False for a PEM
// that does not parse.
bool CertificateNames(const std::string& cert_pem, const std::string& host);

class TlsTunnel {
 public:
  // Connects to `address` (IPv4 or IPv6 literal, or a name) on `port`, does
  // the NBD greeting and STARTTLS, and completes a TLS 1.2+ handshake that
  // accepts only the certificate in `cert_pem` (its first certificate; the
  // validity dates are not checked: the XenAPI vouches for it).  Connecting,
  // greeting and handshake together take at most `timeout_seconds` (name
  // resolution aside).  Errors: InvalidArgument if `cert_pem` holds no
  // certificate; NotSupported if the server presents another certificate,
  // refuses TLS or fails the TLS handshake (retrying will not help); IoError
  // if the server cannot be reached, times out, drops the connection or
  // does not speak NBD.
  static Result<std::unique_ptr<TlsTunnel>> Open(const std::string& address, int port,
                                                 const std::string& cert_pem, int timeout_seconds);

  // Closes the TLS session (close_notify), both sockets and the libnbd end
  // of the socket pair unless it was released; stops the relay thread.
  ~TlsTunnel();
  TlsTunnel(const TlsTunnel&) = delete;
  TlsTunnel& operator=(const TlsTunnel&) = delete;

  // The libnbd end of the socket pair: a plain stream on which a fresh
  // fixed-newstyle greeting waits.  Use it with TLS disabled in libnbd
  // (nbd_set_tls(h, LIBNBD_TLS_DISABLE)) and without NO_ZEROES being
  // offered (the tunnel offers only FIXED_NEWSTYLE, as it told the server).
  int client_fd() const { return client_fd_; }
  // Gives up ownership of client_fd() and returns it: call it when handing
  // the fd to nbd_connect_socket, which takes the descriptor (libnbd closes
  // it in nbd_close, whether or not the connect succeeded).  Until then the
  // tunnel closes it itself.
  int ReleaseClientFd() {
    owns_client_fd_ = false;
    return client_fd_;
  }

 private:
  struct Tls;  // OpenSSL objects, kept out of this header
  TlsTunnel() = default;
  void Relay();

  int tcp_fd_ = -1;     // to the server, TLS
  int relay_fd_ = -1;   // our end of the socket pair, plain
  int client_fd_ = -1;  // libnbd's end of the socket pair
  bool owns_client_fd_ = true;
  int stop_fds_[2] = {-1, -1};  // a pipe: the destructor wakes the relay
  std::unique_ptr<Tls> tls_;
  std::thread relay_;
};

}  // namespace cbt::nbd

#endif  // CBT_NBD_TLS_TUNNEL_H_
