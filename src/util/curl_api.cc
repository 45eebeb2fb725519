// SPDX-License-Identifier: Apache-2.0
#include "util/curl_api.h"

#include "util/lazy_lib.h"

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

}  // namespace cbt
