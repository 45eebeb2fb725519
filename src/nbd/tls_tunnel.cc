// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  Everything up to the end of the TLS handshake runs on the
// caller's thread with non-blocking sockets and poll, against one deadline,
// so a server that accepts and then says nothing cannot hang a backup.  The
// certificate is pinned in OpenSSL's chain-verification hook, so a wrong
// certificate fails the handshake itself (the server gets an alert and no
// NBD byte is ever sent under it).  The relay is one thread per tunnel
// running a loop that tries every transfer that has room or data until none
// makes progress, and only then polls for exactly what the blocked
// transfers wait for: OpenSSL may hold decrypted bytes that poll cannot see,
// and it may need to write while reading or the reverse.  The TLS socket
// goes through a small BIO of our own that sends with MSG_NOSIGNAL: a
// server resetting the connection must be an error, not a SIGPIPE.
#include "nbd/tls_tunnel.h"

#include "util/endian.h"
#include "util/file.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

namespace cbt::nbd {

namespace {

// NBD protocol constants (the NBD protocol document, "newstyle negotiation").
constexpr uint64_t kNbdMagic = 0x4e42444d41474943;       // "NBDMAGIC"
constexpr uint64_t kOptMagic = 0x49484156454f5054;       // "IHAVEOPT"
constexpr uint64_t kOldstyleMagic = 0x0000420281861253;  // old-style, no options
constexpr uint64_t kReplyMagic = 0x0003e889045565a9;
constexpr uint16_t kFlagFixedNewstyle = 1;    // server handshake flag
constexpr uint32_t kClientFixedNewstyle = 1;  // client flag
constexpr uint32_t kOptStartTls = 5;
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepErrBit = 0x80000000u;
constexpr uint32_t kRepErrShutdown = kRepErrBit | 7;

// A greeting is 18 bytes, an option reply header 20; the payload of an
// error reply is a message for humans, so a long one is not NBD.
constexpr uint32_t kMaxReplyPayload = 4096;

// Relay buffers.  Replies to reads are large (xapi-nbd answers up to 2 MiB
// per request), requests are small.
constexpr size_t kDownBuffer = 256 * 1024;
constexpr size_t kUpBuffer = 64 * 1024;

using Clock = std::chrono::steady_clock;

std::string HostPort(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Waits until `fd` is ready for `events` or `deadline` passes.  POLLERR and
// POLLHUP count as ready: the read or write that follows reports them.
Status WaitFor(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Status::IoError(what + ": timed out");
    struct pollfd p = {fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), INT_MAX)));
    if (n > 0) return Status::Ok();
    if (n == 0) return Status::IoError(what + ": timed out");
    if (errno != EINTR) return Status::IoError(what + ": poll: " + std::strerror(errno));
  }
}

Status ReadExact(int fd, unsigned char* buf, size_t len, Clock::time_point deadline,
                 const std::string& what) {
  while (len > 0) {
    ssize_t n = ::recv(fd, buf, len, 0);
    if (n > 0) {
      buf += n;
      len -= static_cast<size_t>(n);
    } else if (n == 0) {
      return Status::IoError(what + ": the server closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      CBT_RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline, what));
    } else if (errno != EINTR) {
      return Status::IoError(what + ": " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

Status WriteExact(int fd, const unsigned char* buf, size_t len, Clock::time_point deadline,
                  const std::string& what) {
  while (len > 0) {
    ssize_t n = ::send(fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
      buf += n;
      len -= static_cast<size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      CBT_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, what));
    } else if (errno != EINTR) {
      return Status::IoError(what + ": " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

// A connected non-blocking TCP socket (TCP_NODELAY: NBD requests are small
// and a reply waits on each) to the first address of `address` that
// answers before `deadline`.
Result<UniqueFd> ConnectTcp(const std::string& address, int port, Clock::time_point deadline,
                            const std::string& where) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) return Status::IoError(where + ": " + ::gai_strerror(rc));
  std::unique_ptr<struct addrinfo, decltype(&::freeaddrinfo)> owner(res, &::freeaddrinfo);
  Status last = Status::IoError(where + ": no address");
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = Status::IoError(where + ": socket: " + std::strerror(errno));
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last = Status::IoError(where + ": " + std::strerror(errno));
        continue;
      }
      Status ready = WaitFor(fd.get(), POLLOUT, deadline, where);
      if (!ready.ok()) {
        last = ready;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last = Status::IoError(where + ": " + std::strerror(err));
        continue;
      }
    }
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return last;
}

std::string ReplyErrorName(uint32_t type) {
  static const char* const kNames[] = {"UNSUP",    "POLICY",          "INVALID",
                                       "PLATFORM", "TLS_REQD",        "UNKNOWN",
                                       "SHUTDOWN", "BLOCK_SIZE_REQD", "TOO_BIG"};
  const uint32_t index = (type & ~kRepErrBit) - 1;
  if (index < std::size(kNames)) return std::string("NBD_REP_ERR_") + kNames[index];
  return "error " + std::to_string(type & ~kRepErrBit);
}

// The server's part of the fixed-newstyle greeting, our client flags and
// NBD_OPT_STARTTLS, up to its acknowledgement.
Status StartTls(int fd, Clock::time_point deadline, const std::string& where) {
  unsigned char greeting[18];
  CBT_RETURN_IF_ERROR(ReadExact(fd, greeting, sizeof greeting, deadline, where));
  if (LoadBe64(greeting) != kNbdMagic) return Status::IoError(where + " is not an NBD server");
  if (LoadBe64(greeting + 8) == kOldstyleMagic) {
    return Status::NotSupported(where + " speaks old-style NBD, which has no TLS");
  }
  if (LoadBe64(greeting + 8) != kOptMagic) return Status::IoError(where + " is not an NBD server");
  const uint16_t flags = LoadBe16(greeting + 16);
  if ((flags & kFlagFixedNewstyle) == 0) {
    return Status::NotSupported(where + " does not speak fixed-newstyle NBD, which TLS needs");
  }
  // Only FIXED_NEWSTYLE, not NO_ZEROES: libnbd later negotiates the export
  // with this server believing it chose the flags itself, and it will be
  // offered FIXED_NEWSTYLE only (see Open).
  unsigned char request[4 + 16];
  StoreBe32(request, kClientFixedNewstyle);
  StoreBe64(request + 4, kOptMagic);
  StoreBe32(request + 12, kOptStartTls);
  StoreBe32(request + 16, 0);
  CBT_RETURN_IF_ERROR(WriteExact(fd, request, sizeof request, deadline, where));

  unsigned char reply[20];
  CBT_RETURN_IF_ERROR(ReadExact(fd, reply, sizeof reply, deadline, where));
  const uint32_t type = LoadBe32(reply + 12);
  const uint32_t length = LoadBe32(reply + 16);
  if (LoadBe64(reply) != kReplyMagic || LoadBe32(reply + 8) != kOptStartTls ||
      length > kMaxReplyPayload) {
    return Status::IoError(where + ": malformed reply to NBD_OPT_STARTTLS");
  }
  std::string payload(length, '\0');
  CBT_RETURN_IF_ERROR(
      ReadExact(fd, reinterpret_cast<unsigned char*>(payload.data()), length, deadline, where));
  if (type == kRepAck) return Status::Ok();
  if ((type & kRepErrBit) == 0) {
    return Status::IoError(where + ": unexpected reply " + std::to_string(type) +
                           " to NBD_OPT_STARTTLS");
  }
  // The payload is free text from the server: keep it printable.
  std::string why;
  for (char c : payload) why += (c >= 0x20 && c < 0x7f) ? c : '?';
  std::string msg =
      where + " refused TLS (" + ReplyErrorName(type) + (why.empty() ? "" : ": " + why) + ")";
  // A server shutting down may take TLS again in a moment; any other
  // refusal is its configuration.
  if (type == kRepErrShutdown) return Status::IoError(msg);
  return Status::NotSupported(msg);
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The first certificate of a PEM text, or null.
X509Ptr ParsePem(const std::string& pem) {
  if (pem.empty() || pem.size() > INT_MAX) return nullptr;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return nullptr;
  X509Ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  ERR_clear_error();
  return cert;
}

std::string Der(X509* cert) {
  int n = i2d_X509(cert, nullptr);
  if (n <= 0) return {};
  std::string der(static_cast<size_t>(n), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_X509(cert, &p) != n) return {};
  return der;
}

std::string SubjectOf(X509* cert) {
  char buf[256];
  if (X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

// The pinned certificate, and what the server presented instead.
struct Pin {
  std::string der;
  bool mismatch = false;
  std::string presented;  // subject of the rejected certificate
};

// Replaces OpenSSL's chain verification: the server's own certificate must
// be the pinned one, byte for byte.  Chain, names and dates do not matter;
// the TLS handshake itself proves the server holds that certificate's key.
int VerifyPinned(X509_STORE_CTX* store, void* arg) {
  auto* pin = static_cast<Pin*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (leaf != nullptr && !pin->der.empty() && Der(leaf) == pin->der) return 1;
  pin->mismatch = true;
  pin->presented = leaf != nullptr ? SubjectOf(leaf) : "";
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

// A socket BIO that never raises SIGPIPE (OpenSSL's own writes with
// write(2)).  The descriptor is the BIO's data; it is not owned.
int SockFd(BIO* bio) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio))); }

int SockRead(BIO* bio, char* buf, int len) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::recv(SockFd(bio), buf, static_cast<size_t>(len), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(bio);
  // OpenSSL asks BIO_eof() to tell a peer that closed without close_notify.
  if (n == 0) BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
  return static_cast<int>(n);
}

int SockWrite(BIO* bio, const char* buf, int len) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::send(SockFd(bio), buf, static_cast<size_t>(len), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

long SockCtrl(BIO* bio, int cmd, long, void*) {  // NOLINT(runtime/int): OpenSSL's type
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0;
    default:
      return 0;
  }
}

BIO_METHOD* SockMethod() {
  // Built once and kept for the life of the process.
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m =
        BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cbt nbd tunnel socket");
    if (m != nullptr) {
      BIO_meth_set_read(m, SockRead);
      BIO_meth_set_write(m, SockWrite);
      BIO_meth_set_ctrl(m, SockCtrl);
    }
    return m;
  }();
  return method;
}

// The oldest error OpenSSL queued on this thread, for a message.
std::string SslErrorText(int ssl_error) {
  unsigned long e = ERR_get_error();  // NOLINT(runtime/int)
  ERR_clear_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
  }
  if (ssl_error == SSL_ERROR_SYSCALL && errno != 0) return std::strerror(errno);
  return "the server closed the connection";
}

}  // namespace

struct TlsTunnel::Tls {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  Pin pin;
  ~Tls() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
};

bool CertificateNames(const std::string& cert_pem, const std::string& host) {
  X509Ptr cert = ParsePem(cert_pem);
  if (!cert || host.empty()) return false;
  int rc;
  if (IsIpLiteral(host)) {
    rc = X509_check_ip_asc(cert.get(), host.c_str(), 0);
  } else {
    // As strict as GnuTLS or stricter: the tunnel works whatever the names.
    rc = X509_check_host(cert.get(), host.data(), host.size(),
                         X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                         nullptr);
  }
  ERR_clear_error();
  return rc == 1;
}

Result<std::unique_ptr<TlsTunnel>> TlsTunnel::Open(const std::string& address, int port,
                                                   const std::string& cert_pem,
                                                   int timeout_seconds) {
  const std::string where = "NBD server " + HostPort(address, port);
  X509Ptr pinned = ParsePem(cert_pem);
  if (!pinned) return Status::InvalidArgument(where + ": the XenAPI gave no usable certificate");
  const auto deadline = Clock::now() + std::chrono::seconds(std::max(1, timeout_seconds));

  // The object owns each resource as soon as it exists, so every early
  // return below releases what was made so far.
  auto t = std::unique_ptr<TlsTunnel>(new TlsTunnel());
  t->tls_ = std::make_unique<Tls>();
  t->tls_->pin.der = Der(pinned.get());
  if (t->tls_->pin.der.empty()) {
    return Status::InvalidArgument(where + ": the XenAPI gave no usable certificate");
  }
  CBT_ASSIGN_OR_RETURN(UniqueFd tcp, ConnectTcp(address, port, deadline, where));
  t->tcp_fd_ = tcp.Release();
  CBT_RETURN_IF_ERROR(StartTls(t->tcp_fd_, deadline, where));

  Tls& tls = *t->tls_;
  tls.ctx = SSL_CTX_new(TLS_client_method());
  if (tls.ctx == nullptr) return Status::IoError(where + ": " + SslErrorText(SSL_ERROR_SSL));
  SSL_CTX_set_min_proto_version(tls.ctx, TLS1_2_VERSION);
  long options = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;  // NOLINT(runtime/int)
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  // A server that closes without close_notify has still sent all it meant
  // to; libnbd, not the tunnel, judges whether a reply was cut short.
  options |= SSL_OP_IGNORE_UNEXPECTED_EOF;
#endif
  SSL_CTX_set_options(tls.ctx, options);
  SSL_CTX_set_mode(tls.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Fewer reads per 16 KiB record on the 2 MiB replies.
  SSL_CTX_set_read_ahead(tls.ctx, 1);
  SSL_CTX_set_default_read_buffer_len(tls.ctx, 64 * 1024);
  SSL_CTX_set_verify(tls.ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(tls.ctx, VerifyPinned, &tls.pin);
  tls.ssl = SSL_new(tls.ctx);
  BIO* bio = SockMethod() != nullptr ? BIO_new(SockMethod()) : nullptr;
  if (tls.ssl == nullptr || bio == nullptr) {
    BIO_free(bio);
    return Status::IoError(where + ": " + SslErrorText(SSL_ERROR_SSL));
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(t->tcp_fd_)));
  BIO_set_init(bio, 1);
  SSL_set_bio(tls.ssl, bio, bio);
  if (!IsIpLiteral(address)) (void)SSL_set_tlsext_host_name(tls.ssl, address.c_str());

  auto not_pinned = [&where](const std::string& subject) {
    return Status::NotSupported(where + " presented a TLS certificate" +
                                (subject.empty() ? "" : " (" + subject + ")") +
                                " that is not the one the XenAPI handed out (VDI.get_nbd_info)");
  };
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_connect(tls.ssl);
    if (rc == 1) break;
    int err = SSL_get_error(tls.ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      CBT_RETURN_IF_ERROR(WaitFor(t->tcp_fd_, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                                  deadline, where + ": TLS handshake"));
      continue;
    }
    if (tls.pin.mismatch) {
      ERR_clear_error();
      return not_pinned(tls.pin.presented);
    }
    std::string why = SslErrorText(err);
    // A protocol failure will fail again; a dropped connection may not.
    if (err == SSL_ERROR_SSL) {
      return Status::NotSupported(where + ": TLS handshake failed: " + why);
    }
    return Status::IoError(where + ": TLS handshake failed: " + why);
  }
  // The hook above ran during the handshake; checking the result again
  // costs nothing and does not depend on how OpenSSL calls hooks.
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  X509* peer = SSL_get0_peer_certificate(tls.ssl);
  const bool pinned_ok = peer != nullptr && Der(peer) == tls.pin.der;
#else
  X509Ptr peer(SSL_get_peer_certificate(tls.ssl));
  const bool pinned_ok = peer != nullptr && Der(peer.get()) == tls.pin.der;
#endif
  if (!pinned_ok) return not_pinned("");

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status::IoError(where + ": socketpair: " + std::strerror(errno));
  }
  t->relay_fd_ = pair[0];
  t->client_fd_ = pair[1];
  if (::fcntl(t->relay_fd_, F_SETFL, ::fcntl(t->relay_fd_, F_GETFL) | O_NONBLOCK) != 0 ||
      ::pipe2(t->stop_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Status::IoError(where + ": " + std::strerror(errno));
  }
  // libnbd's view: a fresh fixed-newstyle server offering FIXED_NEWSTYLE
  // only, so it answers with the client flags the real server already got.
  // 18 bytes into an empty socket pair cannot block.
  unsigned char greeting[18];
  StoreBe64(greeting, kNbdMagic);
  StoreBe64(greeting + 8, kOptMagic);
  StoreBe16(greeting + 16, kFlagFixedNewstyle);
  CBT_RETURN_IF_ERROR(WriteExact(t->relay_fd_, greeting, sizeof greeting, deadline, where));

  t->relay_ = std::thread(&TlsTunnel::Relay, t.get());
  return t;
}

void TlsTunnel::Relay() {
  SSL* ssl = tls_->ssl;
  std::vector<char> down(kDownBuffer);  // server -> libnbd, [down_begin, down_end)
  std::vector<char> up(kUpBuffer);      // libnbd -> server, [up_begin, up_end)
  size_t down_begin = 0, down_end = 0, up_begin = 0, up_end = 0;
  // libnbd answers the synthetic greeting with 4 bytes of client flags;
  // the server had ours, so they are checked and dropped.
  unsigned char client_flags[4];
  size_t flags_missing = sizeof client_flags;
  bool server_eof = false;   // TLS closed by the server: flush to libnbd, stop
  bool local_eof = false;    // libnbd stopped writing: flush to the server
  bool notify_sent = false;  // our close_notify
  bool tls_failed = false;   // a fatal TLS error: no more SSL calls but SSL_free
  bool failed = false;
  bool stopped = false;

  while (!failed && !stopped && !(server_eof && down_begin == down_end)) {
    // What each blocked transfer waits for, from the last pass that made
    // no progress.
    bool tls_in = false, tls_out = false, local_in = false, local_out = false;
    // Records what a failed SSL_read/SSL_write of `n` waits for; false when
    // it failed for good.
    auto ssl_waits = [&](int n) {
      switch (SSL_get_error(ssl, n)) {
        case SSL_ERROR_WANT_READ:
          tls_in = true;
          return true;
        case SSL_ERROR_WANT_WRITE:
          tls_out = true;
          return true;
        default:
          return false;
      }
    };
    for (bool progress = true; progress && !failed;) {
      progress = false;
      tls_in = tls_out = local_in = local_out = false;
      // Server -> libnbd.
      if (!server_eof && down_end < down.size()) {
        ERR_clear_error();
        int n = SSL_read(ssl, down.data() + down_end, static_cast<int>(down.size() - down_end));
        if (n > 0) {
          down_end += static_cast<size_t>(n);
          progress = true;
        } else if (SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN) {
          server_eof = true;
          progress = true;
        } else if (!ssl_waits(n)) {
          tls_failed = failed = true;
        }
      }
      if (down_begin < down_end) {
        ssize_t n =
            ::send(relay_fd_, down.data() + down_begin, down_end - down_begin, MSG_NOSIGNAL);
        if (n > 0) {
          down_begin += static_cast<size_t>(n);
          if (down_begin == down_end) down_begin = down_end = 0;
          progress = true;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          local_out = true;
        } else if (n < 0 && errno == EINTR) {
          progress = true;
        } else {
          failed = true;  // libnbd closed its end
        }
      }
      // libnbd -> server.  The buffer is refilled only once empty: a write
      // OpenSSL asked to retry must be retried with the same bytes.
      if (!local_eof && up_begin == up_end) {
        ssize_t n = ::recv(relay_fd_, up.data(), up.size(), 0);
        if (n > 0) {
          up_begin = 0;
          up_end = static_cast<size_t>(n);
          if (flags_missing > 0) {
            while (flags_missing > 0 && up_begin < up_end) {
              client_flags[sizeof client_flags - flags_missing--] =
                  static_cast<unsigned char>(up[up_begin++]);
            }
            // Anything but FIXED_NEWSTYLE would mean libnbd expects a
            // negotiation the server was not told about.
            if (flags_missing == 0 && LoadBe32(client_flags) != kClientFixedNewstyle) failed = true;
          }
          progress = true;
        } else if (n == 0) {
          local_eof = true;
          progress = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
          local_in = true;
        } else if (errno == EINTR) {
          progress = true;
        } else {
          failed = true;
        }
      }
      if (up_begin < up_end && !failed) {
        ERR_clear_error();
        int n = SSL_write(ssl, up.data() + up_begin, static_cast<int>(up_end - up_begin));
        if (n > 0) {
          up_begin += static_cast<size_t>(n);
          progress = true;
        } else if (!ssl_waits(n)) {
          tls_failed = failed = true;
        }
      }
      // libnbd is done writing (it does so after NBD_CMD_DISC): pass that on
      // and keep relaying the server's last replies until it closes.
      if (local_eof && up_begin == up_end && !notify_sent && !failed) {
        ERR_clear_error();
        int n = SSL_shutdown(ssl);
        if (n >= 0) {
          notify_sent = true;
          progress = true;
        } else {
          int err = SSL_get_error(ssl, n);
          if (err == SSL_ERROR_WANT_WRITE) {
            tls_out = true;
          } else if (err == SSL_ERROR_WANT_READ) {
            tls_in = true;
          } else {
            tls_failed = failed = true;
          }
        }
      }
    }
    if (failed || (server_eof && down_begin == down_end)) break;

    struct pollfd fds[3] = {
        {tls_in || tls_out ? tcp_fd_ : -1,
         static_cast<short>((tls_in ? POLLIN : 0) | (tls_out ? POLLOUT : 0)), 0},
        {local_in || local_out ? relay_fd_ : -1,
         static_cast<short>((local_in ? POLLIN : 0) | (local_out ? POLLOUT : 0)), 0},
        {stop_fds_[0], POLLIN, 0},
    };
    // Decrypted bytes OpenSSL already holds are invisible to poll.
    const bool pending = !server_eof && down_end < down.size() && SSL_pending(ssl) > 0;
    if (fds[0].fd < 0 && fds[1].fd < 0 && !pending) break;  // nothing could ever move
    if (::poll(fds, 3, pending ? 0 : -1) < 0 && errno != EINTR) break;
    stopped = fds[2].revents != 0;
  }
  ERR_clear_error();
  if (!tls_failed && !notify_sent) {
    (void)SSL_shutdown(ssl);  // best effort, non-blocking
  }
  ERR_clear_error();
  // libnbd sees the end at once and fails what it still waits for; the
  // server sees the connection go.  The descriptors stay open until the
  // destructor, so no other thread can be handed their numbers meanwhile.
  ::shutdown(relay_fd_, SHUT_RDWR);
  ::shutdown(tcp_fd_, SHUT_RDWR);
}

TlsTunnel::~TlsTunnel() {
  if (relay_.joinable()) {
    const char wake = 1;
    (void)!::write(stop_fds_[1], &wake, 1);
    relay_.join();
  }
  tls_.reset();
  for (int fd : {tcp_fd_, relay_fd_, stop_fds_[0], stop_fds_[1]}) {
    if (fd >= 0) ::close(fd);
  }
  if (owns_client_fd_ && client_fd_ >= 0) ::close(client_fd_);
}

}  // namespace cbt::nbd
