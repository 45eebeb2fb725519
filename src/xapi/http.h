// SPDX-License-Identifier: Apache-2.0
//
// The HTTP(S) transport to a XenServer host, on libcurl.  HTTPS verifies the
// server certificate and name against the system CAs, or against the file
// given with --ca-cert; plain HTTP is used only when the URL says http://.
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

class HttpClient {
 public:
  // `base_url` is scheme://host[:port]; a missing scheme means https.
  // InvalidArgument for a malformed URL.
  static Result<std::unique_ptr<HttpClient>> Create(const std::string& base_url,
                                                    const std::string& ca_cert);
  ~HttpClient();

  const std::string& base_url() const { return base_url_; }
  const std::string& host() const { return host_; }
  // A client for the same scheme and port on another host (HOST_IS_SLAVE).
  Result<std::unique_ptr<HttpClient>> ForHost(const std::string& host) const;

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
  std::string scheme_, host_, port_, base_url_, ca_cert_;
  std::mutex mu_;
  void* rpc_ = nullptr;  // the CURL handle Post reuses, guarded by mu_
};

// Percent-encodes a query parameter value.
std::string UrlEncode(const std::string& s);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_HTTP_H_
