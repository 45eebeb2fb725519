// SPDX-License-Identifier: Apache-2.0
#include "xapi/http.h"

#include "util/curl_api.h"
#include "util/interrupt.h"

#include <algorithm>
#include <cctype>

namespace cbt::xapi {

namespace {

struct PutSource {
  const std::function<int64_t(char*, size_t)>* source;
  bool aborted = false;
};

size_t ReadBody(char* buf, size_t size, size_t nitems, void* userdata) {
  auto* src = static_cast<PutSource*>(userdata);
  int64_t n = (*src->source)(buf, size * nitems);
  if (n < 0) {
    src->aborted = true;
    return CURL_READFUNC_ABORT;
  }
  return static_cast<size_t>(n);
}

// Stops a disk transfer when the process is interrupted; XML-RPC calls are
// left alone, so the clean-up calls after an interruption still work.
int AbortOnInterrupt(void*, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return Interrupted() ? 1 : 0;
}

}  // namespace

Result<std::pair<std::string, std::string>> SplitUrl(const std::string& url) {
  auto sep = url.find("://");
  if (sep == std::string::npos) return Status::InvalidArgument("'" + url + "' is not a URL");
  const std::string scheme = url.substr(0, sep);
  if (scheme != "http" && scheme != "https") {
    return Status::InvalidArgument("'" + url + "' is not an http(s) URL");
  }
  auto path = url.find('/', sep + 3);
  if (path == std::string::npos) return std::make_pair(url, std::string("/"));
  return std::make_pair(url.substr(0, path), url.substr(path));
}

std::string UrlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

Result<std::unique_ptr<HttpClient>> HttpClient::Create(const std::string& base_url,
                                                       const HttpOptions& options) {
  CBT_RETURN_IF_ERROR(LoadCurl());
  std::string url = base_url;
  std::string scheme = "https";
  auto sep = url.find("://");
  if (sep != std::string::npos) {
    scheme = url.substr(0, sep);
    url = url.substr(sep + 3);
  }
  if (scheme != "https" && scheme != "http") {
    return Status::InvalidArgument("server URL '" + base_url +
                                   "' must start with https:// or http://");
  }
  if (scheme == "http" && !options.allow_plaintext) {
    return Status::InvalidArgument(
        "refusing plain http:// to " + base_url +
        ": the password, the session and the NBD certificates would travel unauthenticated; use "
        "https://, or pass --allow-plaintext if this network is trusted");
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.empty() || url.find('/') != std::string::npos) {
    return Status::InvalidArgument("server URL '" + base_url + "' must be scheme://host[:port]");
  }
  std::string host = url, port;
  if (url.front() == '[') {  // [IPv6]:port
    auto close = url.find(']');
    if (close == std::string::npos)
      return Status::InvalidArgument("bad IPv6 address in " + base_url);
    host = url.substr(1, close - 1);
    if (close + 1 < url.size() && url[close + 1] == ':') port = url.substr(close + 2);
  } else if (std::count(url.begin(), url.end(), ':') == 1) {
    host = url.substr(0, url.find(':'));
    port = url.substr(url.find(':') + 1);
  }
  auto c = std::unique_ptr<HttpClient>(new HttpClient());
  c->scheme_ = scheme;
  c->host_ = host;
  c->port_ = port;
  c->options_ = options;
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  c->base_url_ = scheme + "://" + h + (port.empty() ? "" : ":" + port);
  return c;
}

Result<std::unique_ptr<HttpClient>> HttpClient::ForHost(const std::string& host,
                                                        const std::string& ca_pem) const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return ForUrl(scheme_ + "://" + h + (port_.empty() ? "" : ":" + port_), ca_pem);
}

Result<std::unique_ptr<HttpClient>> HttpClient::ForUrl(const std::string& url,
                                                       const std::string& ca_pem) const {
  CBT_ASSIGN_OR_RETURN(auto parts, SplitUrl(url));
  HttpOptions o = options_;
  if (!ca_pem.empty()) {
    o.ca_pem = ca_pem;
    o.ca_cert.clear();
  }
  // A redirect may not downgrade the scheme.
  if (scheme_ == "https" && parts.first.rfind("https://", 0) != 0) {
    return Status::InvalidArgument("the server redirected an HTTPS request to " + parts.first);
  }
  return Create(parts.first, o);
}

HttpClient::~HttpClient() {
  if (rpc_ != nullptr) Curl().easy_cleanup(static_cast<CURL*>(rpc_));
}

Result<HttpResponse> HttpClient::Perform(void* handle, const std::string& what) {
  CURL* curl = static_cast<CURL*>(handle);
  HttpResponse resp;
  Curl().easy_setopt(curl, CURLOPT_WRITEFUNCTION, CurlAppendBody);
  Curl().easy_setopt(curl, CURLOPT_WRITEDATA, &resp.body);
  Curl().easy_setopt(curl, CURLOPT_HEADERFUNCTION, CurlCollectHeader);
  Curl().easy_setopt(curl, CURLOPT_HEADERDATA, &resp.headers);
  Curl().easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  Curl().easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  // A transfer that stalls (a host gone silent, a handler that stopped
  // reading) fails instead of hanging.
  Curl().easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  Curl().easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_seconds));
  Curl().easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  Curl().easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  struct curl_blob blob;
  if (!options_.ca_pem.empty()) {
    blob.data = const_cast<char*>(options_.ca_pem.data());
    blob.len = options_.ca_pem.size();
    blob.flags = CURL_BLOB_NOCOPY;
    Curl().easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
  } else if (!options_.ca_cert.empty()) {
    Curl().easy_setopt(curl, CURLOPT_CAINFO, options_.ca_cert.c_str());
  }
  char errbuf[CURL_ERROR_SIZE] = {};
  Curl().easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = Curl().easy_perform(curl);
  if (rc == CURLE_ABORTED_BY_CALLBACK && Interrupted()) return CheckInterrupted();
  if (rc != CURLE_OK) {
    // A server that redirects an upload answers before reading the body and
    // closes: the send then fails, but the answer was read.
    Curl().easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
    if (resp.status >= 300 && resp.status < 400 && resp.headers.count("location")) return resp;
    std::string detail = errbuf[0] ? errbuf : Curl().easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      detail += " (no progress for " + std::to_string(options_.stall_seconds) +
                " s; --http-timeout sets the limit)";
    }
    std::string hint;
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CONNECT_ERROR) {
      hint = " (the server's TLS certificate is not trusted: pass it with --ca-cert FILE)";
    }
    return Status::IoError(what + " " + base_url_ + ": " + detail + hint);
  }
  Curl().easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
  return resp;
}

Result<HttpResponse> HttpClient::Post(const std::string& path, const std::string& body,
                                      const std::string& content_type) {
  std::lock_guard<std::mutex> g(mu_);
  // One handle for every call, so its connection (and TLS session) is kept
  // alive between calls: a backup makes a few dozen of them, and a new
  // connection each cost a TCP and TLS handshake and a reload of the CA
  // certificates.  curl reconnects by itself if the server dropped it; it
  // also sends a request again, once, when a kept connection closes before
  // any answer (the usual idle timeout).  Should xapi have carried out the
  // call before the connection died, it runs twice, and a call that creates
  // an object (VM.snapshot, VDI.create) leaves one extra behind; a fresh
  // connection per call would have reported an error instead.  Snapshots
  // carry our name, so the next backup's clean-up removes such a one.
  if (rpc_ == nullptr) {
    rpc_ = Curl().easy_init();
    if (rpc_ == nullptr) return Status::IoError("curl_easy_init failed");
  }
  CURL* curl = static_cast<CURL*>(rpc_);
  std::string url = base_url_ + path;
  Curl().easy_setopt(curl, CURLOPT_URL, url.c_str());
  Curl().easy_setopt(curl, CURLOPT_POST, 1L);
  Curl().easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  Curl().easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  struct curl_slist* hdrs = nullptr;
  hdrs = Curl().slist_append(hdrs, ("Content-Type: " + content_type).c_str());
  hdrs = Curl().slist_append(hdrs, "Expect:");
  Curl().easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  Curl().easy_setopt(curl, CURLOPT_TIMEOUT, static_cast<long>(options_.call_seconds));
  auto r = Perform(curl, "cannot reach");
  // Clears every option, so the kept handle holds no pointer into this call
  // (body, headers, response); its connections stay.
  Curl().easy_reset(curl);
  Curl().slist_free_all(hdrs);
  return r;
}

Result<HttpResponse> HttpClient::Get(const std::string& path_and_query) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = Curl().easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  Curl().easy_setopt(curl, CURLOPT_URL, url.c_str());
  Curl().easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  Curl().easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortOnInterrupt);
  auto r = Perform(curl, "GET failed on");
  Curl().easy_cleanup(curl);
  return r;
}

Result<HttpResponse> HttpClient::Put(const std::string& path_and_query, uint64_t length,
                                     const std::function<int64_t(char*, size_t)>& source) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = Curl().easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  PutSource src{&source};
  Curl().easy_setopt(curl, CURLOPT_URL, url.c_str());
  Curl().easy_setopt(curl, CURLOPT_UPLOAD, 1L);
  Curl().easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(length));
  Curl().easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
  Curl().easy_setopt(curl, CURLOPT_READDATA, &src);
  Curl().easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
  struct curl_slist* hdrs = nullptr;
  hdrs = Curl().slist_append(hdrs, "Expect:");
  Curl().easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  Curl().easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  Curl().easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortOnInterrupt);
  auto r = Perform(curl, "PUT failed on");
  Curl().slist_free_all(hdrs);
  Curl().easy_cleanup(curl);
  if (src.aborted) return Status::Aborted("upload aborted by its source");
  return r;
}

}  // namespace cbt::xapi
