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
  std::string server;   // URL or host name of the pool master
  std::string ca_cert;  // PEM file to trust, "" for the system CAs
  std::string user = "root";
  std::string password;
  std::string originator = "cbt-backup";
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
  // destroying it.
  Result<Value> WaitTask(const std::string& task,
                         const std::function<void(double)>& progress = nullptr);

  // Ends the session now (also done by the destructor).
  void Logout();

 private:
  Session() = default;
  std::unique_ptr<HttpClient> http_;
  std::string ref_;
  std::string user_;
};

// One line describing a XenAPI ErrorDescription for a user.
std::string DescribeError(const std::vector<std::string>& error, const std::string& method);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_SESSION_H_
