// SPDX-License-Identifier: Apache-2.0
//
// The XenAPI session and its HTTP transport against a real HTTP server on
// loopback, written here so that each test decides exactly what the server
// does: refuse, redirect to the master, answer a XenAPI failure, stall, or
// vanish between two calls.  The server answers one request per connection,
// so every call opens a new one and a server that stopped listening is
// refused at once, the way a rebooted pool master is.
#include "xapi/session.h"

#include "xapi/http.h"
#include "xapi/xmlrpc.h"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace cbt;
using namespace cbt::xapi;

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string Envelope(Value v) {
  return "<?xml version=\"1.0\"?><methodResponse><params><param>" + EncodeValue(v) +
         "</param></params></methodResponse>";
}

std::string Success(Value v) {
  return Envelope(Value::Struct({{"Status", Value("Success")}, {"Value", std::move(v)}}));
}

std::string Failure(const std::vector<std::string>& error) {
  Value a = Value::Array();
  for (const auto& e : error) a.Add(Value(e));
  return Envelope(Value::Struct({{"Status", Value("Failure")}, {"ErrorDescription", a}}));
}

// One request as the server saw it.
struct Request {
  std::string local;   // the address it arrived on
  std::string verb;    // POST, GET, PUT
  std::string path;    // /path?query
  std::string method;  // XML-RPC methodName, for a POST
  std::vector<Value> params;
};

// What the server does with a request.
struct Reply {
  Reply() = default;
  Reply(std::string xml) : body(std::move(xml)) {}  // NOLINT: implicit, for terse handlers
  std::string body;                                 // an XML-RPC response, sent as HTTP 200
  std::string raw;                                  // else these bytes verbatim
  bool stall = false;           // then keep the connection open, silent, until stopped
  bool stop_listening = false;  // stop accepting before answering: later calls are refused
};

std::vector<Value> ParseParams(const std::string& body) {
  std::vector<Value> params;
  size_t pos = 0;
  while ((pos = body.find("<param>", pos)) != std::string::npos) {
    size_t end = body.find("</param>", pos);
    if (end == std::string::npos) break;
    auto v = ParseValue(body.substr(pos + 7, end - pos - 7));
    params.push_back(v.ok() ? *v : Value("<unparsable>"));
    pos = end;
  }
  return params;
}

std::string Between(const std::string& s, const std::string& open, const std::string& close) {
  size_t a = s.find(open);
  if (a == std::string::npos) return "";
  a += open.size();
  size_t b = s.find(close, a);
  return b == std::string::npos ? "" : s.substr(a, b - a);
}

// A plain HTTP/1.1 server on one port of one or more loopback addresses,
// serving connections one at a time on its own thread.
class Server {
 public:
  using Handler = std::function<Reply(const Request&)>;

  Server(std::vector<std::string> addresses, Handler handler) : handler_(std::move(handler)) {
    // The same port on every address, as a pool's hosts share xapi's port.
    for (int attempt = 0; attempt < 20 && fds_.empty(); ++attempt) {
      port_ = 0;
      for (const auto& a : addresses) {
        int fd = Listen(a, &port_);
        if (fd < 0) {
          for (int f : fds_) ::close(f);
          fds_.clear();
          break;
        }
        fds_.push_back(fd);
      }
    }
    REQUIRE_FALSE(fds_.empty());
    thread_ = std::thread([this] { Run(); });
  }
  ~Server() {
    stop_ = true;
    thread_.join();
    CloseListeners();
  }

  int port() const { return port_; }
  std::string url(const std::string& address = "127.0.0.1") const {
    return "http://" + address + ":" + std::to_string(port_);
  }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> g(mu_);
    return requests_;
  }
  std::vector<std::string> methods() {
    std::vector<std::string> out;
    for (const auto& r : requests()) out.push_back(r.method);
    return out;
  }

 private:
  static int Listen(const std::string& address, int* port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(*port));
    ::inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
    socklen_t len = sizeof sa;
    if (::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(fd, 16) != 0 ||
        ::getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) != 0) {
      ::close(fd);
      return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
  }

  void CloseListeners() {
    std::lock_guard<std::mutex> g(mu_);
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

  void Run() {
    while (!stop_) {
      std::vector<struct pollfd> pfds;
      {
        std::lock_guard<std::mutex> g(mu_);
        for (int fd : fds_) pfds.push_back({fd, POLLIN, 0});
      }
      if (pfds.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      if (::poll(pfds.data(), pfds.size(), 50) <= 0) continue;
      for (const auto& p : pfds) {
        if ((p.revents & POLLIN) == 0) continue;
        int conn = ::accept4(p.fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        Serve(conn);
        ::close(conn);
        break;  // the listeners may have changed
      }
    }
  }

  void Serve(int conn) {
    struct timeval tv = {5, 0};
    ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string in;
    char buf[65536];
    size_t header_end;
    while ((header_end = in.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(conn, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    const std::string head = in.substr(0, header_end);
    size_t length = 0;
    for (const char* name : {"Content-Length:", "content-length:"}) {
      auto at = head.find(name);
      if (at != std::string::npos) length = std::stoul(head.substr(at + std::strlen(name)));
    }
    while (in.size() < header_end + 4 + length) {
      ssize_t n = ::recv(conn, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    const std::string body = in.substr(header_end + 4, length);
    Request r;
    struct sockaddr_in sa = {};
    socklen_t len = sizeof sa;
    ::getsockname(conn, reinterpret_cast<struct sockaddr*>(&sa), &len);
    char addr[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof addr);
    r.local = addr;
    r.verb = head.substr(0, head.find(' '));
    r.path = head.substr(r.verb.size() + 1, head.find(' ', r.verb.size() + 1) - r.verb.size() - 1);
    r.method = Between(body, "<methodName>", "</methodName>");
    r.params = ParseParams(body);
    {
      std::lock_guard<std::mutex> g(mu_);
      requests_.push_back(r);
    }
    Reply reply = handler_(r);
    if (reply.stop_listening) CloseListeners();
    std::string out = reply.raw;
    if (out.empty() && !reply.stall) {
      out = "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\nContent-Length: " +
            std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
    }
    for (size_t done = 0; done < out.size();) {
      ssize_t n = ::send(conn, out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
    if (reply.stall) {
      const auto start = Clock::now();
      while (!stop_ && SecondsSince(start) < 20) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  Handler handler_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<int> fds_;  // guarded by mu_
  std::vector<Request> requests_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Answers login and logout as xapi does; everything else goes to `rest`.
Server::Handler WithLogin(std::function<Reply(const Request&)> rest = nullptr) {
  return [rest](const Request& r) -> Reply {
    if (r.method == "session.login_with_password") return {Success(Value("OpaqueRef:s1"))};
    if (r.method == "session.logout") return {Success(Value(""))};
    if (rest) return rest(r);
    return {Failure({"MESSAGE_METHOD_UNKNOWN", r.method})};
  };
}

ConnectOptions Plain(const Server& server) {
  ConnectOptions o;
  o.server = server.url();
  o.http.allow_plaintext = true;
  o.password = "secret";
  return o;
}

// A port on 127.0.0.1 that nobody listens on.
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  struct sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  REQUIRE(::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) == 0);
  ::close(fd);
  return ntohs(sa.sin_port);
}

}  // namespace

TEST_CASE("Session: logs in with the originator and logs out when destroyed", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  if (r.method == "pool.get_all") {
                    return {Success(Value::Array({Value("OpaqueRef:pool")}))};
                  }
                  return {Failure({"MESSAGE_METHOD_UNKNOWN", r.method})};
                }));
  {
    auto s = Session::Login(Plain(server));
    INFO(s.status().message());
    REQUIRE(s.ok());
    CHECK((*s)->ref() == "OpaqueRef:s1");
    auto pools = (*s)->Call("pool.get_all");
    REQUIRE(pools.ok());
    REQUIRE(pools->items().size() == 1);
    CHECK(pools->items()[0].str() == "OpaqueRef:pool");
  }
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(reqs[0].verb == "POST");
  CHECK(reqs[0].method == "session.login_with_password");
  REQUIRE(reqs[0].params.size() == 4);
  CHECK(reqs[0].params[0].str() == "root");
  CHECK(reqs[0].params[1].str() == "secret");
  CHECK(reqs[0].params[3].str() == "cbt-backup");
  // Every call carries the session first.
  CHECK(reqs[1].method == "pool.get_all");
  REQUIRE(reqs[1].params.size() == 1);
  CHECK(reqs[1].params[0].str() == "OpaqueRef:s1");
  CHECK(reqs[2].method == "session.logout");
  REQUIRE(reqs[2].params.size() == 1);
  CHECK(reqs[2].params[0].str() == "OpaqueRef:s1");
}

TEST_CASE("Session: an explicit Logout is not repeated by the destructor", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin());
  {
    auto s = Session::Login(Plain(server));
    REQUIRE(s.ok());
    (*s)->Logout();
    CHECK((*s)->ref().empty());
  }
  CHECK(server.methods() ==
        std::vector<std::string>{"session.login_with_password", "session.logout"});
}

TEST_CASE("Session: HOST_IS_SLAVE sends the login to the master, and the session stays there",
          "[xapi]") {
  // Two "hosts" on one port: a pool member on 127.0.0.1, the master on 127.0.0.2.
  Server server({"127.0.0.1", "127.0.0.2"}, [](const Request& r) -> Reply {
    if (r.local != "127.0.0.2") return {Failure({"HOST_IS_SLAVE", "127.0.0.2"})};
    if (r.method == "session.login_with_password") return {Success(Value("OpaqueRef:m"))};
    return {Success(Value(""))};
  });
  {
    auto s = Session::Login(Plain(server));
    INFO(s.status().message());
    REQUIRE(s.ok());
    CHECK((*s)->ref() == "OpaqueRef:m");
    CHECK((*s)->http().host() == "127.0.0.2");
    CHECK((*s)->http().base_url() == server.url("127.0.0.2"));
    REQUIRE((*s)->Call("pool.get_all").ok());
  }
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 4);
  CHECK(reqs[0].local == "127.0.0.1");
  for (size_t i = 1; i < reqs.size(); ++i) CHECK(reqs[i].local == "127.0.0.2");
  CHECK(reqs[3].method == "session.logout");
}

TEST_CASE("Session: a HOST_IS_SLAVE loop ends with the server's error", "[xapi]") {
  Server server({"127.0.0.1"}, [](const Request&) -> Reply {
    return {Failure({"HOST_IS_SLAVE", "127.0.0.1"})};
  });
  auto s = Session::Login(Plain(server));
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == Status::Code::kRemote);
  CHECK(s.status().remote_code() == "HOST_IS_SLAVE");
  CHECK(server.requests().size() == 3);  // the first login and two redirects
}

TEST_CASE("Session: a XenAPI failure is Remote with the ErrorDescription", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  const std::string ref = r.params.size() > 1 ? r.params[1].str() : "";
                  return {Failure({"HANDLE_INVALID", "VM", ref})};
                }));
  auto s = Session::Login(Plain(server));
  REQUIRE(s.ok());
  auto r = (*s)->Call("VM.get_record", {Value("OpaqueRef:gone")});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Status::Code::kRemote);
  CHECK(r.status().detail() == std::vector<std::string>{"HANDLE_INVALID", "VM", "OpaqueRef:gone"});
  CHECK(r.status().message() == "the server no longer has VM OpaqueRef:gone");
}

TEST_CASE("Session: a refused login names the user and what to check", "[xapi]") {
  Server server({"127.0.0.1"}, [](const Request&) -> Reply {
    return {Failure({"SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"})};
  });
  auto s = Session::Login(Plain(server));
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == Status::Code::kRemote);
  CHECK(Contains(s.status().message(), "for user root"));
  CHECK(Contains(s.status().message(), "--password-file"));
}

TEST_CASE("Session: a server that is not xapi is an IoError naming it", "[xapi]") {
  Server server({"127.0.0.1"}, [](const Request&) -> Reply {
    Reply r;
    r.raw = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    return r;
  });
  auto s = Session::Login(Plain(server));
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == Status::Code::kIoError);
  CHECK(Contains(s.status().message(), "HTTP 404"));
  CHECK(Contains(s.status().message(), server.url()));
}

TEST_CASE("Session: a refused connection is an IoError naming the server", "[xapi]") {
  ConnectOptions o;
  const int port = ClosedPort();
  o.server = "http://127.0.0.1:" + std::to_string(port);
  o.http.allow_plaintext = true;
  auto s = Session::Login(o);
  REQUIRE_FALSE(s.ok());
  INFO(s.status().message());
  CHECK(s.status().code() == Status::Code::kIoError);
  CHECK(Contains(s.status().message(), "127.0.0.1:" + std::to_string(port)));
}

TEST_CASE("Session: CallAsync keeps a network error's own message", "[xapi]") {
  // The server hands out the task, then goes away: polling the task fails
  // on the transport, which must not be reported as a XenAPI failure.
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  if (r.method == "Async.VM.snapshot") {
                    Reply reply{Success(Value("OpaqueRef:task"))};
                    reply.stop_listening = true;
                    return reply;
                  }
                  return {Failure({"MESSAGE_METHOD_UNKNOWN", r.method})};
                }));
  auto s = Session::Login(Plain(server));
  REQUIRE(s.ok());
  auto r = (*s)->CallAsync("VM.snapshot", {Value("OpaqueRef:vm"), Value("name")});
  REQUIRE_FALSE(r.ok());
  INFO(r.status().message());
  CHECK(r.status().code() == Status::Code::kIoError);
  CHECK(Contains(r.status().message(), server.url()));
  CHECK_FALSE(Contains(r.status().message(), "UNKNOWN"));
  CHECK(r.status().detail().empty());
}

TEST_CASE("Session: CallAsync reports progress, returns the result and destroys the task",
          "[xapi]") {
  int polls = 0;
  Server server({"127.0.0.1"}, WithLogin([&polls](const Request& r) -> Reply {
                  if (r.method == "Async.VM.snapshot") return {Success(Value("OpaqueRef:task"))};
                  if (r.method == "task.get_status") {
                    return {Success(Value(++polls < 3 ? "pending" : "success"))};
                  }
                  if (r.method == "task.get_progress") {
                    return {Success(Value::Double(polls < 3 ? 0.5 : 1.0))};
                  }
                  if (r.method == "task.get_result") {
                    return {Success(Value("<value>OpaqueRef:snap</value>"))};
                  }
                  if (r.method == "task.destroy") return {Success(Value(""))};
                  return {Failure({"MESSAGE_METHOD_UNKNOWN", r.method})};
                }));
  auto s = Session::Login(Plain(server));
  REQUIRE(s.ok());
  std::vector<double> seen;
  auto r = (*s)->CallAsync("VM.snapshot", {Value("OpaqueRef:vm"), Value("name")},
                           [&seen](double p) { seen.push_back(p); });
  INFO(r.status().message());
  REQUIRE(r.ok());
  CHECK(r->str() == "OpaqueRef:snap");
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.front() == 0.5);
  CHECK(seen.back() == 1.0);
  auto methods = server.methods();
  CHECK(methods.back() == "task.destroy");
}

TEST_CASE("Session: a failed task is Remote, described with the method's name", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  if (r.method == "Async.VDI.copy") return {Success(Value("OpaqueRef:task"))};
                  if (r.method == "task.get_status") return {Success(Value("failure"))};
                  if (r.method == "task.get_progress") return {Success(Value::Double(1.0))};
                  if (r.method == "task.get_error_info") {
                    return {Success(Value::Array({Value("SR_FULL"), Value("10"), Value("5")}))};
                  }
                  return {Success(Value(""))};
                }));
  auto s = Session::Login(Plain(server));
  REQUIRE(s.ok());
  auto r = (*s)->CallAsync("VDI.copy", {Value("OpaqueRef:vdi")});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Status::Code::kRemote);
  CHECK(r.status().detail() == std::vector<std::string>{"SR_FULL", "10", "5"});
  CHECK(r.status().message() == "VDI.copy failed: SR_FULL [10, 5]");
}

TEST_CASE("Session: WaitTaskFor gives up on a task that never moves, and cancels it", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  if (r.method == "task.get_status") return {Success(Value("pending"))};
                  if (r.method == "task.get_progress") return {Success(Value::Double(0.0))};
                  return {Success(Value(""))};
                }));
  auto s = Session::Login(Plain(server));
  REQUIRE(s.ok());
  const auto start = Clock::now();
  auto r = (*s)->WaitTaskFor("OpaqueRef:handler-task", 1.0);
  const double took = SecondsSince(start);
  REQUIRE_FALSE(r.ok());
  INFO(r.status().message());
  CHECK(r.status().code() == Status::Code::kIoError);
  CHECK(Contains(r.status().message(), "did not finish within 1 s"));
  CHECK(took >= 1.0);
  CHECK(took < 5.0);
  auto reqs = server.requests();
  REQUIRE_FALSE(reqs.empty());
  CHECK(reqs.back().method == "task.cancel");
  REQUIRE(reqs.back().params.size() == 2);
  CHECK(reqs.back().params[1].str() == "OpaqueRef:handler-task");
}

TEST_CASE("Session: WaitTask cancels a task whose progress stalls", "[xapi]") {
  Server server({"127.0.0.1"}, WithLogin([](const Request& r) -> Reply {
                  if (r.method == "task.get_status") return {Success(Value("pending"))};
                  if (r.method == "task.get_progress") return {Success(Value::Double(0.25))};
                  return {Success(Value(""))};
                }));
  ConnectOptions o = Plain(server);
  o.task_stall_seconds = 1;
  auto s = Session::Login(o);
  REQUIRE(s.ok());
  const auto start = Clock::now();
  auto r = (*s)->WaitTask("OpaqueRef:t");
  REQUIRE_FALSE(r.ok());
  INFO(r.status().message());
  CHECK(r.status().code() == Status::Code::kIoError);
  CHECK(Contains(r.status().message(), "made no progress for 1 s"));
  CHECK(SecondsSince(start) < 5.0);
  CHECK(server.methods().back() == "task.cancel");
}

TEST_CASE("Http: a call that gets no answer fails after stall_seconds", "[xapi]") {
  Server server({"127.0.0.1"}, [](const Request&) -> Reply {
    Reply r;
    r.stall = true;
    return r;
  });
  ConnectOptions o = Plain(server);
  o.http.stall_seconds = 1;
  const auto start = Clock::now();
  auto s = Session::Login(o);
  const double took = SecondsSince(start);
  REQUIRE_FALSE(s.ok());
  INFO(s.status().message());
  CHECK(s.status().code() == Status::Code::kIoError);
  CHECK(Contains(s.status().message(), "no progress for 1 s"));
  CHECK(Contains(s.status().message(), server.url()));
  // curl judges the speed over a window of the last five seconds, so the
  // bytes moved just before the stall count for that long.
  CHECK(took < 12.0);
}

TEST_CASE("Http: a download that stops midway fails after stall_seconds", "[xapi]") {
  Server server({"127.0.0.1"}, [](const Request&) -> Reply {
    Reply r;
    r.raw = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\nfirst bytes";
    r.stall = true;
    return r;
  });
  HttpOptions o;
  o.allow_plaintext = true;
  o.stall_seconds = 1;
  auto http = HttpClient::Create(server.url(), o);
  REQUIRE(http.ok());
  const auto start = Clock::now();
  auto r = (*http)->Get("/export_raw_vdi?vdi=x");
  REQUIRE_FALSE(r.ok());
  INFO(r.status().message());
  CHECK(r.status().code() == Status::Code::kIoError);
  CHECK(Contains(r.status().message(), "no progress for 1 s"));
  CHECK(SecondsSince(start) < 12.0);
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].verb == "GET");
  CHECK(server.requests()[0].path == "/export_raw_vdi?vdi=x");
}

TEST_CASE("Http: plain http:// is refused unless allowed", "[xapi]") {
  HttpOptions o;
  auto refused = HttpClient::Create("http://127.0.0.1:1", o);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Status::Code::kInvalidArgument);
  CHECK(Contains(refused.status().message(), "--allow-plaintext"));

  ConnectOptions c;
  c.server = "http://127.0.0.1:1";
  auto login = Session::Login(c);
  REQUIRE_FALSE(login.ok());
  CHECK(login.status().code() == Status::Code::kInvalidArgument);

  o.allow_plaintext = true;
  auto allowed = HttpClient::Create("http://127.0.0.1:1/", o);
  REQUIRE(allowed.ok());
  CHECK((*allowed)->base_url() == "http://127.0.0.1:1");

  // No scheme means https, which needs no permission.
  auto https = HttpClient::Create("pool-master.example", HttpOptions{});
  REQUIRE(https.ok());
  CHECK((*https)->base_url() == "https://pool-master.example");
  // A redirect may not downgrade it.
  auto down = (*https)->ForUrl("http://other.example/import", "");
  REQUIRE_FALSE(down.ok());
  CHECK(down.status().code() == Status::Code::kInvalidArgument);

  CHECK_FALSE(HttpClient::Create("ftp://host", o).ok());
  CHECK_FALSE(HttpClient::Create("https://host/path", o).ok());
  CHECK(Session::Login(ConnectOptions{}).status().code() == Status::Code::kInvalidArgument);
}

TEST_CASE("Http: IPv6 hosts keep their brackets, ForHost keeps scheme and port", "[xapi]") {
  auto c = HttpClient::Create("https://[fd00::5]:8443", HttpOptions{});
  REQUIRE(c.ok());
  CHECK((*c)->host() == "fd00::5");
  CHECK((*c)->base_url() == "https://[fd00::5]:8443");
  auto other = (*c)->ForHost("192.0.2.7");
  REQUIRE(other.ok());
  CHECK((*other)->base_url() == "https://192.0.2.7:8443");
}

TEST_CASE("Http: SplitUrl", "[xapi]") {
  auto a = SplitUrl("https://192.0.2.7:443/import_raw_vdi?vdi=OpaqueRef:x&format=vhd");
  REQUIRE(a.ok());
  CHECK(a->first == "https://192.0.2.7:443");
  CHECK(a->second == "/import_raw_vdi?vdi=OpaqueRef:x&format=vhd");
  auto b = SplitUrl("http://host");
  REQUIRE(b.ok());
  CHECK(b->first == "http://host");
  CHECK(b->second == "/");
  auto c = SplitUrl("https://[fd00::5]:443/x");
  REQUIRE(c.ok());
  CHECK(c->first == "https://[fd00::5]:443");
  CHECK(c->second == "/x");
  CHECK(SplitUrl("ftp://host/x").status().code() == Status::Code::kInvalidArgument);
  CHECK(SplitUrl("host/x").status().code() == Status::Code::kInvalidArgument);
  CHECK(UrlEncode("OpaqueRef:a b/c") == "OpaqueRef:a%20b%2Fc");
}
