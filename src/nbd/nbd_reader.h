// SPDX-License-Identifier: Apache-2.0
//
// Reading a XenServer VDI over NBD with libnbd, as xapi-nbd serves it:
// TLS with exactly the certificate VDI.get_nbd_info handed out, the export
// name from that record (it embeds the session), old-style EXPORT_NAME
// negotiation when NBD_OPT_GO is refused, no structured replies.
//
// Several connections read in parallel (xapi-nbd answers requests in order
// on one connection and allows 16 connections per host).  In a pool,
// get_nbd_info lists every host that sees the SR, each with its own
// certificate: connections are spread over the endpoints, each checked
// against its own certificate, and one that cannot be reached is skipped
// for the next.  A failed or unanswered request drops its connection,
// reconnects with back-off and retries, a bounded number of times; then the
// whole read fails with a one-line error.  An interrupted process
// (util/interrupt.h) stops the read with Aborted.
//
// Thread-safety: Read() runs its own worker threads and calls the sink from
// them concurrently; one Read() at a time per reader.
#ifndef CBT_NBD_NBD_READER_H_
#define CBT_NBD_NBD_READER_H_

#include "util/status.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cbt::nbd {

struct Endpoint {
  std::string address;  // as get_nbd_info gives it: IPv6 may carry a "/prefix"
  int port = 10809;
  std::string exportname;
  std::string cert;     // PEM; empty means the server offers no TLS
  std::string subject;  // DNS name in the certificate
};

struct ReaderOptions {
  int connections = 4;
  uint64_t max_request = 2 * 1024 * 1024;
  int attempts = 4;   // per request, counting the first
  int in_flight = 8;  // requests queued per connection
  bool require_tls = true;
  int timeout_seconds = 120;  // a connection, or a request, that takes longer has failed
};

struct Extent {
  uint64_t offset;
  uint64_t length;
};

// Loads libnbd (normally loaded by the first Connect).  Loading it from a
// cold cache takes about 15 ms, pulling in its TLS and XML libraries; a
// caller that knows it will read over NBD can have that happen on another
// thread while it waits on the server.  A failure is reported again by
// Connect.  Thread-safe.
void Preload();

class Reader {
 public:
  // Connects (one connection first, to fail fast with a clear message).
  // IoError naming the endpoint if no endpoint answers; NotSupported if the
  // certificate does not verify.
  static Result<std::unique_ptr<Reader>> Connect(const std::vector<Endpoint>& endpoints,
                                                 const ReaderOptions& options);
  ~Reader();

  uint64_t size() const { return size_; }
  uint64_t bytes_read() const { return bytes_read_.load(); }

  // Reads every extent (split into requests of at most max_request bytes)
  // and hands each piece to `sink(offset, data, length)`, from several
  // threads at once and in no particular order.  The first error from the
  // sink or from NBD stops the read and is returned.
  Status Read(const std::vector<Extent>& extents,
              const std::function<Status(uint64_t, const char*, size_t)>& sink);

 private:
  struct Conn;
  Reader() = default;
  Result<std::unique_ptr<Conn>> Open(size_t endpoint_hint);
  // libnbd reads its CA from a directory, and only while it connects.  The
  // directory (under $TMPDIR or /tmp, one subdirectory per endpoint with its
  // certificate) exists only while some connection is being opened, so a
  // process killed while it reads leaves nothing behind.
  Result<std::string> AcquireTlsDir();
  void ReleaseTlsDir();

  std::vector<Endpoint> endpoints_;
  ReaderOptions options_;
  std::mutex tls_mu_;
  int tls_users_ = 0;    // guarded by tls_mu_
  std::string tls_dir_;  // guarded by tls_mu_; empty when there is none
  uint64_t size_ = 0;
  std::atomic<uint64_t> bytes_read_{0};
  std::vector<std::unique_ptr<Conn>> conns_;
};

// The host part of a get_nbd_info address: xapi stores a PIF's IPv6
// address with its prefix length ("fd00::5/64"), which is not an address to
// connect to.
std::string HostOfAddress(const std::string& address);

}  // namespace cbt::nbd

#endif  // CBT_NBD_NBD_READER_H_
