// SPDX-License-Identifier: Apache-2.0
//
// A client of S3-compatible object stores (AWS S3, Ceph RADOS Gateway,
// MinIO), on libcurl, whose own AWS Signature Version 4 support signs every
// request.  It knows objects, not repositories: keys are relative to the
// repository's prefix in its bucket.
//
// Settings follow the AWS command line's conventions (SettingsFromEnvironment),
// so that users' existing settings work; credentials never come from the
// command line.
//
// Every request is retried with exponential backoff (from 0.2 s, doubling,
// up to 10 s apart, `attempts` tries in all) when the connection fails,
// drops or stalls, or when the store answers 500, 502, 503 or 504, or
// with the error codes SlowDown, RequestTimeout or InternalError.  Other
// answers are final: 404 is NotFound, 412 (a failed condition) is Exists,
// 403 is an InvalidArgument naming the store's message, a full store
// (507, or the codes QuotaExceeded, EntityTooLarge) is NoSpace.
//
// Thread-safety: an S3Client may be shared; requests run in parallel on a
// pool of kept-alive connections.
#ifndef CBT_OBJSTORE_S3_H_
#define CBT_OBJSTORE_S3_H_

#include "util/status.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbt::objstore {

// "s3://BUCKET/PREFIX": PREFIX may be empty; it never starts or ends with
// '/' once parsed.
struct S3Url {
  std::string bucket;
  std::string prefix;
  std::string ToString() const;
};

bool IsS3Url(std::string_view s);

// InvalidArgument unless `s` is s3://BUCKET[/PREFIX] with a valid bucket
// name (3-63 of a-z, 0-9, '.', '-') and a prefix without empty,
// "." or ".." segments.
Result<S3Url> ParseS3Url(std::string_view s);

struct S3Settings {
  std::string endpoint;  // scheme://host[:port]; empty: AWS for `region`
  std::string region = "us-east-1";
  bool path_style = false;  // BUCKET in the path, not in the host name
  std::string ca_cert;      // PEM file to trust, "" for the system CAs
  std::string access_key;
  std::string secret_key;
  std::string session_token;
  int attempts = 8;          // tries per request, the first included
  int stall_seconds = 60;    // a transfer below 1 byte/s this long fails
  int connect_seconds = 15;  // per connection attempt
};

// The settings from the environment, as the AWS command line reads them:
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;
//   else the profile AWS_PROFILE (default "default") of the credentials file
//   AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials);
//   AWS_REGION, else AWS_DEFAULT_REGION, else the profile's `region` in
//   AWS_CONFIG_FILE (default ~/.aws/config), else us-east-1;
//   AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else the profile's
//   `endpoint_url`: a non-AWS endpoint, addressed path-style unless
//   CBT_S3_ADDRESSING_STYLE=virtual;
//   AWS_MAX_ATTEMPTS: tries per request (default 8).
// `ca_cert` (from --ca-cert) is used as given, else AWS_CA_BUNDLE.
// InvalidArgument, saying what is missing, without credentials.
Result<S3Settings> SettingsFromEnvironment(const std::string& ca_cert);

struct ObjectInfo {
  std::string key;  // relative to the prefix
  uint64_t size = 0;
  std::string etag;  // without quotes (for a single PUT: the MD5 in hex)
};

struct ObjectHead {
  uint64_t size = 0;
  std::string etag;           // as the store sends it, quotes included
  int64_t last_modified = 0;  // Unix time, by the store's clock
  int64_t server_time = 0;    // the answer's Date, by the store's clock
  std::string lock_mode;      // x-amz-object-lock-mode, "" if none
  std::string retain_until;   // x-amz-object-lock-retain-until-date, "" if none
};

struct PutOptions {
  bool if_none_match = false;  // only if the key does not exist (else Exists)
  std::string if_match;        // only if the object has this ETag (else Exists)
  std::string lock_mode;       // "GOVERNANCE" or "COMPLIANCE", with retain_until
  std::string retain_until;    // ISO 8601 UTC, e.g. 2027-01-01T00:00:00Z
};

class S3Client {
 public:
  // InvalidArgument for a malformed endpoint; NotSupported without libcurl.
  static Result<std::unique_ptr<S3Client>> Create(const S3Settings& settings, const S3Url& url);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  const S3Url& url() const { return url_; }
  const S3Settings& settings() const { return settings_; }

  // The whole object.  NotFound if it does not exist.
  Result<std::string> Get(const std::string& key);
  // Exactly `length` bytes from `offset` into `out`.  NotFound if the
  // object does not exist; Corruption if it is shorter.
  Status GetRange(const std::string& key, uint64_t offset, uint64_t length, char* out);
  // The object's metadata, nullopt if it does not exist.
  Result<std::optional<ObjectHead>> Head(const std::string& key);
  // Writes `data` as the object; returns its ETag.  The body is sent with
  // its MD5 (Content-MD5), so the store refuses bytes damaged on the way.
  Result<std::string> Put(const std::string& key, std::string_view data,
                          const PutOptions& options = {});
  // Writes the `size` bytes of the file open as `fd` from offset 0; with
  // Content-MD5 over plain http or with Object Lock, not over https (TLS
  // protects the body; the file's own checksums are checked on reading).
  Result<std::string> PutFile(const std::string& key, int fd, uint64_t size,
                              const PutOptions& options = {});
  // Removes the object; a missing object is not an error.  Removing one
  // that Object Lock retains fails (InvalidArgument with the store's code).
  Status Delete(const std::string& key);
  // Every object whose key starts with `prefix` (relative), in key order.
  Result<std::vector<ObjectInfo>> List(const std::string& prefix);

  struct Response {
    long status = 0;
    int attempts = 1;                            // tries it took (retried answers included)
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
  };

 private:
  S3Client(S3Settings settings, S3Url url) : settings_(std::move(settings)), url_(std::move(url)) {}

  struct Request {
    std::string method;
    std::string key;    // relative; "" with `query` for a bucket request
    std::string query;  // encoded, without '?'
    std::vector<std::string> headers;
    std::string_view body;  // for PUT from memory
    int fd = -1;            // for PUT from a file
    uint64_t fd_size = 0;
    char* range_out = nullptr;  // for a ranged GET: where the bytes go
    uint64_t range_offset = 0;
    uint64_t range_length = 0;
  };
  // Sends `req` with retries; returns the final answer (any status).
  Result<Response> Perform(const Request& req);
  Result<Response> PerformOnce(const Request& req, void* curl, bool* retryable);
  std::string UrlFor(const std::string& key, const std::string& query) const;
  void* TakeHandle();
  void ReturnHandle(void* h);

  S3Settings settings_;
  S3Url url_;
  std::string host_base_;  // scheme://host[:port][/bucket] before the key
  bool https_ = false;
  std::mutex mu_;
  std::vector<void*> idle_;  // kept-alive handles, guarded by mu_
};

// The error an answer means: NotFound (404), Exists (412), NoSpace, or
// IoError/InvalidArgument with the store's code and message; `what` names
// the request.  REQUIRES: status >= 300.
Status ErrorFromResponse(const S3Client::Response& r, const std::string& what);

// Percent-encodes `s` as SigV4 canonical requests want: everything but
// A-Z a-z 0-9 - _ . ~ (and '/' unless `encode_slash`).
std::string UriEncode(std::string_view s, bool encode_slash);

// Parses an HTTP date (RFC 7231, "Sun, 06 Nov 1994 08:49:37 GMT") or an ISO
// 8601 UTC time ("2026-12-05T07:16:04.000Z"); nullopt if malformed.
std::optional<int64_t> ParseHttpTime(std::string_view s);
std::optional<int64_t> ParseIsoTime(std::string_view s);
// Unix time as ISO 8601 UTC, seconds precision ("2027-01-01T00:00:00Z").
std::string FormatIsoTime(int64_t t);

}  // namespace cbt::objstore

#endif  // CBT_OBJSTORE_S3_H_
