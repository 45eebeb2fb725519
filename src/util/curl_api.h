// SPDX-License-Identifier: Apache-2.0
//
// libcurl's entry points, bound at run time (util/lazy_lib.h) for the
// clients of the XenAPI (xapi/http) and of object stores (objstore/s3).
// Include <curl/curl.h> after defining CURL_DISABLE_TYPECHECK: the calls go
// through pointers, so curl's type-checking macros cannot apply.
//
// Thread-safety: LoadCurl may be called from any thread; Curl() after a
// successful LoadCurl.
#ifndef CBT_UTIL_CURL_API_H_
#define CBT_UTIL_CURL_API_H_

#define CURL_DISABLE_TYPECHECK 1
#include "util/status.h"

#include <curl/curl.h>

#include <cstddef>

namespace cbt {

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

// Loads libcurl and initialises it, once; NotSupported if it cannot be
// loaded.  Every later call returns the first result.
Status LoadCurl();

// The bound entry points.  REQUIRES: LoadCurl() succeeded.
const CurlApi& Curl();

// CURLOPT_WRITEFUNCTION appending the body to the std::string at `userdata`.
size_t CurlAppendBody(char* ptr, size_t size, size_t nmemb, void* userdata);
// CURLOPT_HEADERFUNCTION filling the std::map<std::string, std::string> at
// `userdata`: lower-case names, values trimmed; a status line (an interim
// 100 Continue, or an answer after an authentication round) starts afresh.
size_t CurlCollectHeader(char* ptr, size_t size, size_t nmemb, void* userdata);

}  // namespace cbt

#endif  // CBT_UTIL_CURL_API_H_
