// SPDX-License-Identifier: Apache-2.0
//
// The HTTP(S) transport to a XenServer host, on libcurl.  HTTPS verifies the
// server certificate and name against the system CAs, the file given with
// --ca-cert, or a certificate the pool handed out for one of its hosts.
// Plain HTTP is refused unless the caller allows it explicitly: the
// password, the session and the NBD certificates would travel
// unauthenticated.
//
// Nothing waits forever: a transfer that moves fewer than 1 byte per second
// for `stall_seconds` fails, an XML-RPC call fails after `call_seconds`, and
// a disk transfer (Get/Put) stops when the process is interrupted
// (util/interrupt.h).
//
// Thread-safety: an HttpClient serialises its own requests; share it freely.
#ifndef CBT_XAPI_HTTP_H_
#define CBT_XAPI_HTTP_H_

#include "util/status.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace cbt::xapi {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct HttpOptions {
  std::string ca_cert;  // PEM file to trust, "" for the system CAs
  std::string ca_pem;   // PEM text to trust instead (a host's own certificate)
  bool allow_plaintext = false;
  int stall_seconds = 120;  // low-speed limit window of every transfer
  int call_seconds = 600;   // whole-request limit of an XML-RPC call
};

class HttpClient {
 public:
  // `base_url` is scheme://host[:port]; a missing scheme means https.
  // InvalidArgument for a malformed URL, or for http:// unless
  // `options.allow_plaintext`.
  static Result<std::unique_ptr<HttpClient>> Create(const std::string& base_url,
                                                    const HttpOptions& options);
  ~HttpClient();

  const std::string& base_url() const { return base_url_; }
  const std::string& host() const { return host_; }
  const HttpOptions& options() const { return options_; }
  // A client for the same scheme and port on another host (HOST_IS_SLAVE,
  // or a pool member), trusting `ca_pem` if not empty (that host's own
  // certificate), else what this client trusts.
  Result<std::unique_ptr<HttpClient>> ForHost(const std::string& host,
                                              const std::string& ca_pem = "") const;
  // A client for the scheme, host and port of `url` (an absolute URL such as
  // a redirect's Location), trusting `ca_pem` if not empty, else what this
  // client trusts.
  Result<std::unique_ptr<HttpClient>> ForUrl(const std::string& url,
                                             const std::string& ca_pem) const;

  // POST `body` to `path`.  IoError if the server cannot be reached or TLS
  // fails (the message says which).
  Result<HttpResponse> Post(const std::string& path, const std::string& body,
                            const std::string& content_type);
  Result<HttpResponse> Get(const std::string& path_and_query);
  // PUT of exactly `length` bytes produced by `source(buf, max)` (which
  // returns how many bytes it wrote, 0 only at the end, or -1 to abort).
  Result<HttpResponse> Put(const std::string& path_and_query, uint64_t length,
                           const std::function<int64_t(char*, size_t)>& source);

 private:
  HttpClient() = default;
  Result<HttpResponse> Perform(void* curl, const std::string& what);
  std::string scheme_, host_, port_, base_url_;
  HttpOptions options_;
  std::mutex mu_;
  void* rpc_ = nullptr;  // the CURL handle Post reuses, guarded by mu_
};

// Percent-encodes a query parameter value.
std::string UrlEncode(const std::string& s);
// Splits an absolute URL into "scheme://host[:port]" and "/path?query".
// InvalidArgument if it is not an http(s) URL.
Result<std::pair<std::string, std::string>> SplitUrl(const std::string& url);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_HTTP_H_
