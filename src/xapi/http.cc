// SPDX-License-Identifier: Apache-2.0
#include "xapi/http.h"

#include "util/interrupt.h"
#include "util/lazy_lib.h"

// The calls go through pointers bound at run time (LazyLibrary), so the
// type-checking macros that wrap curl_easy_setopt cannot apply.
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include <algorithm>
#include <cctype>

namespace cbt::xapi {

namespace {

// libcurl's entry points, bound on first use.
struct CurlApi {
  decltype(&::curl_global_init) global_init = nullptr;
  decltype(&::curl_easy_init) easy_init = nullptr;
  decltype(&::curl_easy_setopt) easy_setopt = nullptr;
  decltype(&::curl_easy_perform) easy_perform = nullptr;
  decltype(&::curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&::curl_easy_reset) easy_reset = nullptr;
  decltype(&::curl_easy_strerror) easy_strerror = nullptr;
  decltype(&::curl_slist_append) slist_append = nullptr;
  decltype(&::curl_slist_free_all) slist_free_all = nullptr;
};

CurlApi g_curl;

// Loads libcurl and initialises it once.  Every HttpClient is created
// through this, so the other functions may use g_curl.
Status LoadCurl() {
  static LazyLibrary lib("libcurl.so.4");
  static Status status = [] {
    CBT_RETURN_IF_ERROR(lib.Load());
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.global_init, "curl_global_init"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_init, "curl_easy_init"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_setopt, "curl_easy_setopt"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_perform, "curl_easy_perform"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_getinfo, "curl_easy_getinfo"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_cleanup, "curl_easy_cleanup"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_reset, "curl_easy_reset"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.easy_strerror, "curl_easy_strerror"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.slist_append, "curl_slist_append"));
    CBT_RETURN_IF_ERROR(lib.Bind(&g_curl.slist_free_all, "curl_slist_free_all"));
    g_curl.global_init(CURL_GLOBAL_DEFAULT);
    return Status::Ok();
  }();
  return status;
}

size_t WriteBody(char* ptr, size_t size, size_t nmemb, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * nmemb);
  return size * nmemb;
}

size_t WriteHeader(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(userdata);
  std::string line(ptr, size * nmemb);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*headers)[name] = value;
  }
  return size * nmemb;
}

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
  if (rpc_ != nullptr) g_curl.easy_cleanup(static_cast<CURL*>(rpc_));
}

Result<HttpResponse> HttpClient::Perform(void* handle, const std::string& what) {
  CURL* curl = static_cast<CURL*>(handle);
  HttpResponse resp;
  g_curl.easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  g_curl.easy_setopt(curl, CURLOPT_WRITEDATA, &resp.body);
  g_curl.easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  g_curl.easy_setopt(curl, CURLOPT_HEADERDATA, &resp.headers);
  g_curl.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  g_curl.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  // A transfer that stalls (a host gone silent, a handler that stopped
  // reading) fails instead of hanging.
  g_curl.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  g_curl.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_seconds));
  g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  struct curl_blob blob;
  if (!options_.ca_pem.empty()) {
    blob.data = const_cast<char*>(options_.ca_pem.data());
    blob.len = options_.ca_pem.size();
    blob.flags = CURL_BLOB_NOCOPY;
    g_curl.easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
  } else if (!options_.ca_cert.empty()) {
    g_curl.easy_setopt(curl, CURLOPT_CAINFO, options_.ca_cert.c_str());
  }
  char errbuf[CURL_ERROR_SIZE] = {};
  g_curl.easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = g_curl.easy_perform(curl);
  if (rc == CURLE_ABORTED_BY_CALLBACK && Interrupted()) return CheckInterrupted();
  if (rc != CURLE_OK) {
    // A server that redirects an upload answers before reading the body and
    // closes: the send then fails, but the answer was read.
    g_curl.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
    if (resp.status >= 300 && resp.status < 400 && resp.headers.count("location")) return resp;
    std::string detail = errbuf[0] ? errbuf : g_curl.easy_strerror(rc);
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
  g_curl.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
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
    rpc_ = g_curl.easy_init();
    if (rpc_ == nullptr) return Status::IoError("curl_easy_init failed");
  }
  CURL* curl = static_cast<CURL*>(rpc_);
  std::string url = base_url_ + path;
  g_curl.easy_setopt(curl, CURLOPT_URL, url.c_str());
  g_curl.easy_setopt(curl, CURLOPT_POST, 1L);
  g_curl.easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  g_curl.easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  struct curl_slist* hdrs = nullptr;
  hdrs = g_curl.slist_append(hdrs, ("Content-Type: " + content_type).c_str());
  hdrs = g_curl.slist_append(hdrs, "Expect:");
  g_curl.easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  g_curl.easy_setopt(curl, CURLOPT_TIMEOUT, static_cast<long>(options_.call_seconds));
  auto r = Perform(curl, "cannot reach");
  // Clears every option, so the kept handle holds no pointer into this call
  // (body, headers, response); its connections stay.
  g_curl.easy_reset(curl);
  g_curl.slist_free_all(hdrs);
  return r;
}

Result<HttpResponse> HttpClient::Get(const std::string& path_and_query) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = g_curl.easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  g_curl.easy_setopt(curl, CURLOPT_URL, url.c_str());
  g_curl.easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  g_curl.easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortOnInterrupt);
  auto r = Perform(curl, "GET failed on");
  g_curl.easy_cleanup(curl);
  return r;
}

Result<HttpResponse> HttpClient::Put(const std::string& path_and_query, uint64_t length,
                                     const std::function<int64_t(char*, size_t)>& source) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = g_curl.easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  PutSource src{&source};
  g_curl.easy_setopt(curl, CURLOPT_URL, url.c_str());
  g_curl.easy_setopt(curl, CURLOPT_UPLOAD, 1L);
  g_curl.easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(length));
  g_curl.easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
  g_curl.easy_setopt(curl, CURLOPT_READDATA, &src);
  g_curl.easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
  struct curl_slist* hdrs = nullptr;
  hdrs = g_curl.slist_append(hdrs, "Expect:");
  g_curl.easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  g_curl.easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  g_curl.easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortOnInterrupt);
  auto r = Perform(curl, "PUT failed on");
  g_curl.slist_free_all(hdrs);
  g_curl.easy_cleanup(curl);
  if (src.aborted) return Status::Aborted("upload aborted by its source");
  return r;
}

}  // namespace cbt::xapi
