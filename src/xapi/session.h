// SPDX-License-Identifier: Apache-2.0
//
// A logged-in XenAPI session on the pool master.  Login follows
// HOST_IS_SLAVE to the master; the destructor logs out, so sessions never
// pile up on the server (xapi keeps at most 500 per user).  XenAPI failures
// come back as Status::Remote whose detail() is the ErrorDescription and
// whose message is one line a user can act on.
//
// Thread-safety: calls may be made from several threads (the transport
// serialises them).
#ifndef CBT_XAPI_SESSION_H_
#define CBT_XAPI_SESSION_H_

#include "util/status.h"
#include "xapi/http.h"
#include "xapi/xmlrpc.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cbt::xapi {

struct ConnectOptions {
  std::string server;  // URL or host name of the pool master
  HttpOptions http;    // what to trust, plaintext, transfer time limits
  std::string user = "root";
  std::string password;
  // xapi groups sessions by originator and destroys the oldest of a group
  // past its cap (db_gc_util.ml, timeout_sessions); naming ours keeps them
  // out of the pool that anonymous clients share.
  std::string originator = "cbt-backup";
  // A task whose progress has not moved for this long is cancelled and
  // reported as failed.
  int task_stall_seconds = 600;
};

class Session {
 public:
  // Logs in, following HOST_IS_SLAVE to the master (at most twice).
  static Result<std::unique_ptr<Session>> Login(const ConnectOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& ref() const { return ref_; }
  HttpClient& http() { return *http_; }

  // Calls `method` with the session prepended to `params`.
  Result<Value> Call(const std::string& method, std::vector<Value> params = {});
  // Calls "Async.<method>", polls the task until it ends (reporting progress
  // 0..1 to `progress` if given), destroys it, and returns the parsed result
  // value.  A failed task returns its error_info as a Remote status.
  Result<Value> CallAsync(const std::string& method, std::vector<Value> params,
                          const std::function<void(double)>& progress = nullptr);
  // Polls a task created elsewhere (for HTTP handlers) the same way, without
  // destroying it.  A task whose progress does not move for the stall limit,
  // or an interrupted process, cancels the task and fails (Aborted when
  // interrupted, IoError when stalled).
  Result<Value> WaitTask(const std::string& task,
                         const std::function<void(double)>& progress = nullptr);
  // Like WaitTask, but gives up (IoError) after `seconds` whatever the
  // progress: for a task that may never be touched, such as the one an HTTP
  // handler was given when the request failed before reaching it.
  Result<Value> WaitTaskFor(const std::string& task, double seconds);
  // The host's own TLS certificate (PEM), for talking to a pool member
  // directly.
  Result<std::string> HostCertificate(const std::string& host_ref);

  // Ends the session now (also done by the destructor).
  void Logout();

 private:
  Session() = default;
  Result<Value> Poll(const std::string& task, const std::function<void(double)>& progress,
                     double hard_limit);
  std::unique_ptr<HttpClient> http_;
  std::string ref_;
  std::string user_;
  int task_stall_seconds_ = 600;
};

// One line describing a XenAPI ErrorDescription for a user.
std::string DescribeError(const std::vector<std::string>& error, const std::string& method);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_SESSION_H_
