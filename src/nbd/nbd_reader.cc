// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  One worker thread per connection, each keeping several
// requests queued on its own handle (libnbd's asynchronous API) and pulling
// the next piece from a shared atomic cursor: requests complete in any
// order and the sink is called as soon as each completes, so disk writes
// overlap network reads.  libnbd is loaded on first use (util/lazy_lib.h).
// Certificate checking: libnbd verifies the server's certificate chain
// against the one PEM from get_nbd_info (written as the only CA) and the
// certificate's name against the host name it connected to; it verifies
// nothing when handed a ready socket.  So where the certificate names the
// endpoint, libnbd connects by name: by `subject` when that name resolves
// to the record's address (what the XenServer CBT guide asks for), else by
// the address itself, which xapi's self-signed host certificates carry for
// the management interface.  Where it does not (a dedicated NBD network),
// TlsTunnel does the TLS handshake, accepting exactly that certificate.  A
// server presenting any other certificate fails either way.
#include "nbd/nbd_reader.h"

#include "nbd/tls_tunnel.h"
#include "util/file.h"
#include "util/interrupt.h"
#include "util/lazy_lib.h"

#include <libnbd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

namespace cbt::nbd {

namespace {

// The one way to accept an NBD server that refuses TLS.
constexpr char kRefusedTlsHint[] =
    "; the pool serves NBD without TLS (network purpose insecure_nbd): pass --no-tls to "
    "accept that";

// libnbd's entry points, bound on first use.
struct NbdApi {
  decltype(&::nbd_create) create = nullptr;
  decltype(&::nbd_close) close = nullptr;
  decltype(&::nbd_shutdown) shutdown = nullptr;
  decltype(&::nbd_get_error) get_error = nullptr;
  decltype(&::nbd_set_tls) set_tls = nullptr;
  decltype(&::nbd_set_tls_certificates) set_tls_certificates = nullptr;
  decltype(&::nbd_set_tls_verify_peer) set_tls_verify_peer = nullptr;
  decltype(&::nbd_set_export_name) set_export_name = nullptr;
  decltype(&::nbd_set_request_structured_replies) set_request_structured_replies = nullptr;
  decltype(&::nbd_aio_connect_tcp) aio_connect_tcp = nullptr;
  decltype(&::nbd_aio_connect_socket) aio_connect_socket = nullptr;
  decltype(&::nbd_aio_is_connecting) aio_is_connecting = nullptr;
  decltype(&::nbd_aio_is_ready) aio_is_ready = nullptr;
  decltype(&::nbd_get_size) get_size = nullptr;
  decltype(&::nbd_aio_pread) aio_pread = nullptr;
  decltype(&::nbd_poll) poll = nullptr;
  decltype(&::nbd_aio_is_dead) aio_is_dead = nullptr;
  decltype(&::nbd_aio_is_closed) aio_is_closed = nullptr;
  decltype(&::nbd_set_pread_initialize) set_pread_initialize = nullptr;  // null before 1.12
};

NbdApi g_nbd;

// Loads libnbd once; Reader::Connect calls it before anything else.
Status LoadNbd() {
  static LazyLibrary lib("libnbd.so.0");
  static Status status = [] {
    CBT_RETURN_IF_ERROR(lib.Load());
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.create, "nbd_create"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.close, "nbd_close"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.shutdown, "nbd_shutdown"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.get_error, "nbd_get_error"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.set_tls, "nbd_set_tls"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.set_tls_certificates, "nbd_set_tls_certificates"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.set_tls_verify_peer, "nbd_set_tls_verify_peer"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.set_export_name, "nbd_set_export_name"));
    CBT_RETURN_IF_ERROR(
        lib.Bind(&g_nbd.set_request_structured_replies, "nbd_set_request_structured_replies"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_connect_tcp, "nbd_aio_connect_tcp"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_connect_socket, "nbd_aio_connect_socket"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_is_connecting, "nbd_aio_is_connecting"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_is_ready, "nbd_aio_is_ready"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.get_size, "nbd_get_size"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_pread, "nbd_aio_pread"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.poll, "nbd_poll"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_is_dead, "nbd_aio_is_dead"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_nbd.aio_is_closed, "nbd_aio_is_closed"));
    (void)lib.Bind(&g_nbd.set_pread_initialize, "nbd_set_pread_initialize");
    return Status::Ok();
  }();
  return status;
}

}  // namespace

void Preload() { (void)LoadNbd(); }

struct Reader::Conn {
  struct nbd_handle* h = nullptr;
  size_t endpoint = 0;
  std::unique_ptr<TlsTunnel> tunnel;  // only where libnbd cannot check the certificate
  ~Conn() {                           // the handle goes first, then the tunnel it reads through
    if (h != nullptr) {
      g_nbd.shutdown(h, 0);
      g_nbd.close(h);
    }
  }
};

namespace {

std::string NbdError() {
  const char* e = g_nbd.get_error();
  return e ? e : "unknown libnbd error";
}

// True if `name` resolves to `address` (compared as numeric host strings).
bool ResolvesTo(const std::string& name, const std::string& address) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0) return false;
  bool match = false;
  for (struct addrinfo* ai = res; ai != nullptr && !match; ai = ai->ai_next) {
    char host[NI_MAXHOST];
    if (::getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) ==
        0) {
      match = address == host;
    }
  }
  ::freeaddrinfo(res);
  return match;
}

// Drives a connection started with nbd_aio_connect_* until it is ready,
// failed, or `seconds` have passed: a host that drops packets would
// otherwise hold the backup for the kernel's TCP connect timeout.
Status FinishConnect(struct nbd_handle* h, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (g_nbd.aio_is_connecting(h) == 1) {
    CBT_RETURN_IF_ERROR(CheckInterrupted());
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::IoError("no answer within " + std::to_string(seconds) + " s");
    }
    if (g_nbd.poll(h, 1000) == -1) return Status::IoError(NbdError());
  }
  if (g_nbd.aio_is_ready(h) != 1) return Status::IoError(NbdError());
  return Status::Ok();
}

}  // namespace

std::string HostOfAddress(const std::string& address) {
  auto slash = address.find('/');
  std::string host = slash == std::string::npos ? address : address.substr(0, slash);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

Result<std::unique_ptr<Reader::Conn>> Reader::Open(size_t hint) {
  Status last = Status::IoError("no NBD endpoint");
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    size_t idx = (hint + i) % endpoints_.size();
    const Endpoint& ep = endpoints_[idx];
    auto conn = std::make_unique<Conn>();
    conn->endpoint = idx;
    conn->h = g_nbd.create();
    if (conn->h == nullptr) return Status::IoError("nbd_create: " + NbdError());
    g_nbd.set_export_name(conn->h, ep.exportname.c_str());
    // xapi-nbd refuses structured replies and NBD_OPT_GO; asking for neither
    // keeps the negotiation identical on every server.
    g_nbd.set_request_structured_replies(conn->h, false);
    // A simple reply fills the whole buffer or fails the read, whose buffer
    // is then never used: libnbd's zeroing of every buffer before the read
    // (2 GiB for 2 GiB read) would buy nothing.
    if (g_nbd.set_pread_initialize != nullptr) g_nbd.set_pread_initialize(conn->h, false);
    if (ep.cert.empty() && options_.require_tls) {
      return Status::NotSupported(
          "the server offers NBD without TLS (no certificate in get_nbd_info); "
          "pass --no-tls to accept that");
    }
    const std::string address = HostOfAddress(ep.address);
    const std::string host =
        !ep.subject.empty() && ResolvesTo(ep.subject, address) ? ep.subject : address;
    // get_nbd_info hands out the host certificate whether or not TLS is in
    // force (xapi_vdi.ml _get_nbd_info): a pool whose NBD network has the
    // insecure_nbd purpose refuses STARTTLS (NBD_REP_ERR_POLICY) although a
    // certificate came with the address.  With --no-tls such a server is
    // read in plain text; otherwise the refusal is the error.
    Status connected;
    bool tls = !ep.cert.empty();
    bool tunnelled = false;  // connected (or failed) through the tunnel
    if (tls && !CertificateNames(ep.cert, host)) {
      // A dedicated NBD network: the host certificate names the management
      // addresses only (xapi networking_info.ml, get_host_certificate_subjects),
      // and libnbd checks a name or nothing.  The tunnel pins the exact
      // certificate instead and hands libnbd the plaintext side.
      auto tunnel = TlsTunnel::Open(address, ep.port, ep.cert, options_.timeout_seconds);
      const bool refused = !tunnel.ok() && tunnel.status().code() == Status::Code::kNotSupported &&
                           tunnel.status().message().find("refused TLS") != std::string::npos;
      if (refused && !options_.require_tls) {
        tls = false;  // plain text below
      } else if (refused) {
        return Status::NotSupported(tunnel.status().message() + kRefusedTlsHint);
      } else if (!tunnel.ok() && tunnel.status().code() == Status::Code::kNotSupported) {
        return Status::NotSupported("TLS with the NBD server " + ep.address +
                                    " failed: " + tunnel.status().message());
      } else if (tunnel.ok()) {
        tunnelled = true;
        conn->tunnel = std::move(*tunnel);
        g_nbd.set_tls(conn->h, LIBNBD_TLS_DISABLE);
        connected = g_nbd.aio_connect_socket(conn->h, conn->tunnel->ReleaseClientFd()) == -1
                        ? Status::IoError(NbdError())
                        : FinishConnect(conn->h, options_.timeout_seconds);
      } else {
        tunnelled = true;
        connected = tunnel.status();
      }
    }
    if (!tunnelled) {
      // Held until the handshake is over: libnbd loads the CA file when it
      // starts TLS, inside the negotiation FinishConnect drives.
      struct TlsDirUse {
        Reader* r = nullptr;
        ~TlsDirUse() {
          if (r != nullptr) r->ReleaseTlsDir();
        }
      } tls_dir_use;
      if (tls) {
        CBT_ASSIGN_OR_RETURN(std::string tls_dir, AcquireTlsDir());
        tls_dir_use.r = this;
        const std::string dir = JoinPath(tls_dir, std::to_string(idx));
        // ALLOW falls back to plain text only when the server refuses TLS;
        // a certificate offered is still verified.
        g_nbd.set_tls(conn->h, options_.require_tls ? LIBNBD_TLS_REQUIRE : LIBNBD_TLS_ALLOW);
        g_nbd.set_tls_certificates(conn->h, dir.c_str());
        g_nbd.set_tls_verify_peer(conn->h, true);
      } else {
        g_nbd.set_tls(conn->h, LIBNBD_TLS_DISABLE);
      }
      connected =
          g_nbd.aio_connect_tcp(conn->h, host.c_str(), std::to_string(ep.port).c_str()) == -1
              ? Status::IoError(NbdError())
              : FinishConnect(conn->h, options_.timeout_seconds);
    }
    if (tls && !connected.ok() &&
        connected.message().find("server refused TLS") != std::string::npos) {
      return Status::NotSupported("NBD server " + ep.address + " refused TLS (" +
                                  connected.message() + ")" + kRefusedTlsHint);
    }
    if (connected.code() == Status::Code::kAborted) return connected;
    if (!connected.ok()) {
      std::string err = connected.message();
      if (!ep.cert.empty() &&
          (err.find("certificate") != std::string::npos || err.find("verif") != std::string::npos ||
           err.find("handshake") != std::string::npos)) {
        return Status::NotSupported("TLS with the NBD server " + ep.address + " failed (" + err +
                                    "): its certificate is not the one the XenAPI handed out");
      }
      last = Status::IoError("NBD connection to " + ep.address + ":" + std::to_string(ep.port) +
                             " failed: " + err);
      continue;
    }
    return conn;
  }
  return last;
}

Result<std::unique_ptr<Reader>> Reader::Connect(const std::vector<Endpoint>& endpoints,
                                                const ReaderOptions& options) {
  if (endpoints.empty()) return Status::InvalidArgument("no NBD endpoint");
  CBT_RETURN_IF_ERROR(LoadNbd());
  auto r = std::unique_ptr<Reader>(new Reader());
  r->endpoints_ = endpoints;
  r->options_ = options;
  CBT_ASSIGN_OR_RETURN(auto first, r->Open(0));
  int64_t size = g_nbd.get_size(first->h);
  if (size < 0) return Status::IoError("NBD export size unknown: " + NbdError());
  r->size_ = static_cast<uint64_t>(size);
  r->conns_.push_back(std::move(first));
  // The other connections are opened at once: each costs a TCP and a TLS
  // handshake, which one after the other add up to a good part of a small
  // incremental backup.  Fewer connections than asked still work.
  std::vector<std::unique_ptr<Conn>> more(
      static_cast<size_t>(std::max(0, options.connections - 1)));
  std::vector<std::thread> openers;
  for (size_t i = 0; i < more.size(); ++i) {
    openers.emplace_back([&r, &more, i] {
      auto c = r->Open(i + 1);
      if (c.ok()) more[i] = std::move(*c);
    });
  }
  for (auto& t : openers) t.join();
  for (auto& c : more) {
    if (c) r->conns_.push_back(std::move(c));
  }
  return r;
}

Result<std::string> Reader::AcquireTlsDir() {
  std::lock_guard<std::mutex> g(tls_mu_);
  if (tls_users_ == 0) {
    std::string tmpl = TempRoot() + "/cbt-nbd-tls.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return Status::FromErrno(errno, "mkdtemp " + tmpl);
    }
    // Each endpoint's certificate is the only CA of its own connections: a
    // host presenting another host's certificate fails.
    Status s;
    for (size_t i = 0; i < endpoints_.size() && s.ok(); ++i) {
      if (endpoints_[i].cert.empty()) continue;
      const std::string dir = JoinPath(tmpl, std::to_string(i));
      s = MakeDir(dir);
      if (s.ok()) s = WriteNewFile(JoinPath(dir, "ca-cert.pem"), endpoints_[i].cert);
    }
    if (!s.ok()) {
      (void)RemoveTree(tmpl);
      return s;
    }
    tls_dir_ = std::move(tmpl);
  }
  ++tls_users_;
  return tls_dir_;
}

void Reader::ReleaseTlsDir() {
  std::lock_guard<std::mutex> g(tls_mu_);
  if (--tls_users_ > 0) return;
  (void)RemoveTree(tls_dir_);
  tls_dir_.clear();
}

Reader::~Reader() { conns_.clear(); }

Status Reader::Read(const std::vector<Extent>& extents,
                    const std::function<Status(uint64_t, const char*, size_t)>& sink) {
  std::vector<Extent> pieces;
  for (const auto& e : extents) {
    for (uint64_t off = 0; off < e.length; off += options_.max_request) {
      pieces.push_back({e.offset + off, std::min(options_.max_request, e.length - off)});
    }
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex err_mu;
  Status first_error;

  auto fail = [&](Status s) {
    std::lock_guard<std::mutex> g(err_mu);
    if (first_error.ok()) first_error = std::move(s);
    stop = true;
  };
  // One worker per connection keeps up to kInFlight requests queued on it
  // (libnbd's asynchronous API), so the server always has the next request
  // while it answers one: xapi-nbd answers in order, but the pipeline hides
  // the round trips.  A failed request is retried on a fresh connection.
  struct Slot {
    std::unique_ptr<char, decltype(&std::free)> buf{nullptr, &std::free};
    Extent piece{0, 0};
    int attempts = 0;
    enum State { kFree, kInFlight, kDone, kFailed } state = kFree;
    int error = 0;
  };
  const auto request_limit = std::chrono::seconds(options_.timeout_seconds);
  auto worker = [&](size_t ci) {
    const size_t in_flight = std::max(1, options_.in_flight);
    std::vector<Slot> slots(in_flight);
    // Page-aligned buffers, so that every 64 KiB block of a request starts
    // on a page boundary.
    for (auto& sl : slots) {
      void* p = nullptr;
      if (::posix_memalign(&p, 4096, options_.max_request) != 0) throw std::bad_alloc();
      sl.buf.reset(static_cast<char*>(p));
    }
    std::vector<std::pair<Extent, int>> retry;  // pieces to read again, with attempts
    std::string last_error;
    // Whether a request is still queued on the connection.
    auto pending = [&slots] {
      for (auto& sl : slots) {
        if (sl.state == Slot::kInFlight) return true;
      }
      return false;
    };
    // Requests still queued when the worker stops (another worker or the
    // sink failed) would be answered into `slots` after they are freed, when
    // the connection is shut down: wait for them, or drop the connection
    // while the buffers still exist.
    auto drain = [&] {
      if (!pending() || !conns_[ci]) return;
      const auto deadline = std::chrono::steady_clock::now() + request_limit;
      while (pending() && !Interrupted() && std::chrono::steady_clock::now() < deadline &&
             !g_nbd.aio_is_dead(conns_[ci]->h) && !g_nbd.aio_is_closed(conns_[ci]->h) &&
             g_nbd.poll(conns_[ci]->h, 1000) != -1) {
      }
      if (pending()) conns_[ci].reset();
    };
    auto completion = [](void* user, int* error) -> int {
      auto* sl = static_cast<Slot*>(user);
      sl->state = *error ? Slot::kFailed : Slot::kDone;
      sl->error = *error;
      return 1;
    };
    // Hands a completed piece to the sink; false (and the read stopped) if
    // the sink failed.
    auto deliver = [&](Slot& sl) {
      bytes_read_ += sl.piece.length;
      Status ss = sink(sl.piece.offset, sl.buf.get(), sl.piece.length);
      sl.state = Slot::kFree;
      if (!ss.ok()) fail(ss);
      return ss.ok();
    };
    auto last_answer = std::chrono::steady_clock::now();
    while (!stop) {
      if (Interrupted()) {
        fail(CheckInterrupted());
        break;
      }
      // Queue work on free slots.
      for (auto& sl : slots) {
        if (sl.state != Slot::kFree) continue;
        if (!retry.empty()) {
          sl.piece = retry.back().first;
          sl.attempts = retry.back().second;
          retry.pop_back();
        } else {
          size_t i = next++;
          if (i >= pieces.size()) break;
          sl.piece = pieces[i];
          sl.attempts = 0;
        }
        sl.state = Slot::kInFlight;
        ++sl.attempts;
        if (!conns_[ci] ||
            g_nbd.aio_pread(conns_[ci]->h, sl.buf.get(), sl.piece.length, sl.piece.offset,
                            nbd_completion_callback{completion, &sl, nullptr}, 0) == -1) {
          sl.state = Slot::kFailed;
          last_error = conns_[ci] ? NbdError() : last_error;
        }
      }
      bool busy = false;
      for (auto& sl : slots) busy |= sl.state == Slot::kInFlight;
      // Polls in slices of a second, so an interruption or a server that
      // stopped answering is noticed.
      int polled = 0;
      if (busy && conns_[ci]) {
        polled = g_nbd.poll(conns_[ci]->h, 1000);
        if (polled == -1) last_error = NbdError();
      }
      bool stalled = false;
      if (polled != 0 || !busy) {
        last_answer = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_answer > request_limit) {
        stalled = true;
        // libnbd still holds the unanswered requests and completes them
        // into `slots` when the handle closes: close it while they exist.
        // The completions' ESHUTDOWN is not the cause, so it is dropped.
        conns_[ci].reset();
        for (auto& sl : slots) sl.error = 0;
        last_error = "no answer within " + std::to_string(options_.timeout_seconds) +
                     " s (--nbd-timeout sets the limit)";
        last_answer = std::chrono::steady_clock::now();
      }
      // A dead connection completes nothing more: fail what it still holds.
      const bool dead = stalled || !conns_[ci] || g_nbd.aio_is_dead(conns_[ci]->h) ||
                        g_nbd.aio_is_closed(conns_[ci]->h);
      bool any_failed = false;
      for (auto& sl : slots) {
        if (dead && sl.state == Slot::kInFlight) sl.state = Slot::kFailed;
        if (sl.state == Slot::kDone) {
          if (!deliver(sl)) break;
        } else if (sl.state == Slot::kFailed) {
          if (sl.error != 0) last_error = std::strerror(sl.error);
          if (sl.attempts >= options_.attempts) {
            fail(Status::IoError("NBD read at offset " + std::to_string(sl.piece.offset) +
                                 " failed after " + std::to_string(sl.attempts) +
                                 " attempts: " + last_error));
            break;
          }
          retry.emplace_back(sl.piece, sl.attempts);
          sl.state = Slot::kFree;
          sl.error = 0;
          any_failed = true;
        }
      }
      if (stop) break;
      if (any_failed || dead) {
        // Wait for what is still in flight, then reconnect with back-off.
        if (conns_[ci] && !dead) {
          const auto deadline = std::chrono::steady_clock::now() + request_limit;
          while (pending() && !Interrupted() && std::chrono::steady_clock::now() < deadline &&
                 g_nbd.poll(conns_[ci]->h, 1000) != -1) {
          }
        }
        for (auto& sl : slots) {
          if (sl.state == Slot::kInFlight || sl.state == Slot::kFailed) {
            retry.emplace_back(sl.piece, sl.attempts);
            sl.state = Slot::kFree;
          } else if (sl.state == Slot::kDone) {
            deliver(sl);
          }
        }
        int worst = 0;
        for (const auto& r : retry) worst = std::max(worst, r.second);
        size_t ep = conns_[ci] ? conns_[ci]->endpoint : ci;
        conns_[ci].reset();
        for (auto& sl : slots) {
          sl.state = Slot::kFree;
          sl.error = 0;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200 << (2 * std::max(0, worst - 1))));
        auto c = Open(ep);
        if (c.ok()) {
          conns_[ci] = std::move(*c);
        } else {
          last_error = "reconnecting failed: " + c.status().message();
        }
        continue;
      }
      bool idle = retry.empty() && next >= pieces.size();
      for (auto& sl : slots) idle &= sl.state == Slot::kFree;
      if (idle) return;
    }
    drain();
  };
  std::vector<std::thread> threads;
  for (size_t ci = 0; ci < conns_.size(); ++ci) threads.emplace_back(worker, ci);
  for (auto& t : threads) t.join();
  return first_error;
}

}  // namespace cbt::nbd
