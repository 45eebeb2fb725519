// SPDX-License-Identifier: Apache-2.0
#include "xapi/session.h"

#include "util/interrupt.h"

#include <chrono>
#include <thread>

namespace cbt::xapi {

namespace {

Result<Value> Invoke(HttpClient& http, const std::string& method,
                     const std::vector<Value>& params) {
  CBT_ASSIGN_OR_RETURN(HttpResponse resp, http.Post("/", EncodeCall(method, params), "text/xml"));
  if (resp.status != 200) {
    return Status::IoError(method + ": the server answered HTTP " + std::to_string(resp.status) +
                           " (is " + http.base_url() + " a XenServer pool master?)");
  }
  auto parsed = ParseResponse(resp.body);
  if (!parsed.ok()) return parsed.status().WithContext(method);
  if (!parsed->success) {
    return Status::Remote(DescribeError(parsed->error, method), parsed->error);
  }
  return parsed->value;
}

}  // namespace

std::string DescribeError(const std::vector<std::string>& e, const std::string& method) {
  const std::string code = e.empty() ? "UNKNOWN" : e[0];
  auto param = [&](size_t i) { return i < e.size() ? e[i] : std::string(); };
  if (code == "SESSION_AUTHENTICATION_FAILED") {
    // xapi sends [uname, message]; the datamodel documents no parameters.
    return "login failed" + (param(1).empty() ? "" : " for user " + param(1)) +
           ": the server refused the user name or password" +
           (param(2).empty() ? "" : " (" + param(2) + ")") +
           "; check --user and --password-file / CBT_PASSWORD";
  }
  if (code == "HOST_IS_SLAVE") {
    return "the server is not the pool master; the master is " + param(1);
  }
  if (code == "UUID_INVALID") return "the server has no " + param(1) + " with UUID " + param(2);
  if (code == "HANDLE_INVALID") return "the server no longer has " + param(1) + " " + param(2);
  if (code == "SESSION_INVALID") return "the XenAPI session expired or was logged out";
  if (code == "VDI_IN_USE") return "VDI " + param(1) + " is in use (" + param(2) + ")";
  if (code == "SR_OPERATION_NOT_SUPPORTED")
    return "the SR " + param(1) + " does not support this operation";
  if (code == "MESSAGE_METHOD_UNKNOWN") return "the server does not know the call " + param(1);
  std::string s = method + " failed: " + code;
  for (size_t i = 1; i < e.size(); ++i) s += (i == 1 ? " [" : ", ") + e[i];
  if (e.size() > 1) s += "]";
  return s;
}

Result<std::unique_ptr<Session>> Session::Login(const ConnectOptions& o) {
  if (o.server.empty()) {
    return Status::InvalidArgument("no server given: pass --server URL (the pool master)");
  }
  CBT_ASSIGN_OR_RETURN(auto http, HttpClient::Create(o.server, o.http));
  for (int redirects = 0;; ++redirects) {
    auto ref = Invoke(*http, "session.login_with_password",
                      {Value(o.user), Value(o.password), Value("1.0"), Value(o.originator)});
    if (ref.ok()) {
      auto s = std::unique_ptr<Session>(new Session());
      s->http_ = std::move(http);
      s->ref_ = ref->str();
      s->user_ = o.user;
      s->task_stall_seconds_ = o.task_stall_seconds;
      return s;
    }
    const auto& d = ref.status().detail();
    if (!d.empty() && d[0] == "HOST_IS_SLAVE" && d.size() > 1 && redirects < 2) {
      CBT_ASSIGN_OR_RETURN(http, http->ForHost(d[1]));
      continue;
    }
    return ref.status();
  }
}

Session::~Session() { Logout(); }

void Session::Logout() {
  if (ref_.empty()) return;
  (void)Invoke(*http_, "session.logout", {Value(ref_)});
  ref_.clear();
}

Result<Value> Session::Call(const std::string& method, std::vector<Value> params) {
  params.insert(params.begin(), Value(ref_));
  return Invoke(*http_, method, params);
}

Result<Value> Session::WaitTask(const std::string& task,
                                const std::function<void(double)>& progress) {
  return Poll(task, progress, 0);
}

Result<Value> Session::WaitTaskFor(const std::string& task, double seconds) {
  return Poll(task, nullptr, seconds);
}

Result<std::string> Session::HostCertificate(const std::string& host_ref) {
  CBT_ASSIGN_OR_RETURN(Value pem, Call("host.get_server_certificate", {Value(host_ref)}));
  return pem.str();
}

Result<Value> Session::Poll(const std::string& task, const std::function<void(double)>& progress,
                            double hard_limit) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_move = start;
  std::string last_progress;
  auto delay = std::chrono::milliseconds(20);
  auto give_up = [&](Status why) -> Status {
    (void)Call("task.cancel", {Value(task)});
    return why;
  };
  while (true) {
    CBT_ASSIGN_OR_RETURN(Value status, Call("task.get_status", {Value(task)}));
    auto p = Call("task.get_progress", {Value(task)});
    if (p.ok()) {
      if (p->str() != last_progress) {
        last_progress = p->str();
        last_move = Clock::now();
      }
      if (progress && p->kind() == Value::Kind::kDouble) progress(std::stod(p->str()));
    }
    const std::string& st = status.str();
    if (st == "success") {
      CBT_ASSIGN_OR_RETURN(Value result, Call("task.get_result", {Value(task)}));
      if (result.str().empty()) return Value();
      return ParseValue(result.str());
    }
    if (st == "failure" || st == "cancelled") {
      CBT_ASSIGN_OR_RETURN(Value info, Call("task.get_error_info", {Value(task)}));
      std::vector<std::string> err;
      for (const auto& item : info.items()) err.push_back(item.str());
      if (err.empty()) err.push_back(st == "cancelled" ? "TASK_CANCELLED" : "INTERNAL_ERROR");
      return Status::Remote(DescribeError(err, "task"), err);
    }
    if (st != "pending" && st != "cancelling") {
      return Status::Corruption("task " + task + " has unknown status '" + st + "'");
    }
    if (Interrupted()) return give_up(CheckInterrupted());
    const auto now = Clock::now();
    if (hard_limit > 0 && std::chrono::duration<double>(now - start).count() > hard_limit) {
      return give_up(Status::IoError("task " + task + " did not finish within " +
                                     std::to_string(static_cast<int>(hard_limit)) + " s"));
    }
    if (std::chrono::duration<double>(now - last_move).count() > task_stall_seconds_) {
      return give_up(Status::IoError("task " + task + " made no progress for " +
                                     std::to_string(task_stall_seconds_) +
                                     " s (--task-timeout sets the limit); cancelled"));
    }
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(1000));
  }
}

Result<Value> Session::CallAsync(const std::string& method, std::vector<Value> params,
                                 const std::function<void(double)>& progress) {
  CBT_ASSIGN_OR_RETURN(Value task, Call("Async." + method, std::move(params)));
  auto result = WaitTask(task.str(), progress);
  (void)Call("task.destroy", {Value(task.str())});
  // A task's own failure is described with the method's name; a transport
  // error or a stall keeps its own message.
  if (!result.ok() && result.status().code() == Status::Code::kRemote &&
      !result.status().detail().empty()) {
    auto s = result.status();
    return Status::Remote(DescribeError(s.detail(), method), s.detail());
  }
  return result;
}

}  // namespace cbt::xapi
