// SPDX-License-Identifier: Apache-2.0
#include "util/curl_api.h"

#include "util/lazy_lib.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <string>

namespace cbt {

namespace {
CurlApi g_curl;
}  // namespace

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

const CurlApi& Curl() { return g_curl; }

size_t CurlAppendBody(char* ptr, size_t size, size_t nmemb, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * nmemb);
  return size * nmemb;
}

size_t CurlCollectHeader(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(userdata);
  std::string line(ptr, size * nmemb);
  if (line.rfind("HTTP/", 0) == 0) headers->clear();
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) {
      value.pop_back();
    }
    (*headers)[name] = value;
  }
  return size * nmemb;
}

}  // namespace cbt
