// SPDX-License-Identifier: Apache-2.0
#include "xapi/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>

namespace cbt::xapi {

namespace {

struct CurlInit {
  CurlInit() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

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

}  // namespace

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
                                                       const std::string& ca_cert) {
  static CurlInit init;
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
  c->ca_cert_ = ca_cert;
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  c->base_url_ = scheme + "://" + h + (port.empty() ? "" : ":" + port);
  return c;
}

Result<std::unique_ptr<HttpClient>> HttpClient::ForHost(const std::string& host) const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return Create(scheme_ + "://" + h + (port_.empty() ? "" : ":" + port_), ca_cert_);
}

HttpClient::~HttpClient() = default;

Result<HttpResponse> HttpClient::Perform(void* handle, const std::string& what) {
  CURL* curl = static_cast<CURL*>(handle);
  HttpResponse resp;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &resp.headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!ca_cert_.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, ca_cert_.c_str());
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    std::string hint;
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CONNECT_ERROR) {
      hint = " (the server's TLS certificate is not trusted: pass it with --ca-cert FILE)";
    }
    return Status::IoError(what + " " + base_url_ + ": " + detail + hint);
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
  return resp;
}

Result<HttpResponse> HttpClient::Post(const std::string& path, const std::string& body,
                                      const std::string& content_type) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  struct curl_slist* hdrs = nullptr;
  hdrs = curl_slist_append(hdrs, ("Content-Type: " + content_type).c_str());
  hdrs = curl_slist_append(hdrs, "Expect:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  auto r = Perform(curl, "cannot reach");
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(curl);
  return r;
}

Result<HttpResponse> HttpClient::Get(const std::string& path_and_query) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  auto r = Perform(curl, "GET failed on");
  curl_easy_cleanup(curl);
  return r;
}

Result<HttpResponse> HttpClient::Put(const std::string& path_and_query, uint64_t length,
                                     const std::function<int64_t(char*, size_t)>& source) {
  std::lock_guard<std::mutex> g(mu_);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::IoError("curl_easy_init failed");
  std::string url = base_url_ + path_and_query;
  PutSource src{&source};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(length));
  curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
  curl_easy_setopt(curl, CURLOPT_READDATA, &src);
  curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
  struct curl_slist* hdrs = nullptr;
  hdrs = curl_slist_append(hdrs, "Expect:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
  auto r = Perform(curl, "PUT failed on");
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(curl);
  if (src.aborted) return Status::Aborted("upload aborted by its source");
  return r;
}

}  // namespace cbt::xapi
