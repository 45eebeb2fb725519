// SPDX-License-Identifier: Apache-2.0
//
// A lock on an object store: one object, created with a conditional PUT
// (If-None-Match: *), so that of two hosts asking at once exactly one
// wins, and kept alive by a lease.  The holder renews the lease every
// third of its length (a PUT with If-Match on the ETag it last wrote); a
// holder that dies stops renewing, and once the store's clock says
// Last-Modified + lease has passed, the next contender takes the lock over
// with a PUT conditional on the stale ETag, which again only one wins.
// Only the store's clock is used (Last-Modified and Date of its answers),
// so hosts' clocks do not matter.
//
// Guarantee: no two holders at once, as long as a holder is never stalled
// (paused, cut off from the store) for longer than the lease between a
// check of `Held()` and the write it protects.  A holder that fails to
// renew (its lease was taken over, or the store could not be reached
// before the lease ran out) is told by Held() returning false, and must
// not write.
//
// Thread-safety: Held() may be called from any thread; the renewal runs on
// its own thread.
#ifndef CBT_OBJSTORE_LEASE_H_
#define CBT_OBJSTORE_LEASE_H_

#include "objstore/s3.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace cbt::objstore {

class Lease {
 public:
  // Takes the lock object `key`, writing `holder` (a JSON object naming the
  // holder; "lease_seconds" is added) into it.  Busy, with the holder's
  // description, if someone else holds an unexpired lease.
  static Result<std::unique_ptr<Lease>> Acquire(S3Client* client, const std::string& key,
                                                const std::string& holder_json, int lease_seconds);
  // Stops renewing and removes the object if it is still ours.
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // False once a renewal failed or found the lock taken over.
  bool Held() const { return held_.load(); }
  // Held() as a Status: Aborted naming the lock if it was lost.
  Status Check() const;
  const std::string& key() const { return key_; }

 private:
  Lease(S3Client* client, std::string key, std::string body, std::string etag, int seconds);
  void Renew();

  S3Client* client_;
  std::string key_;
  std::string body_;
  std::string etag_;  // of our last write, guarded by mu_
  int seconds_;
  std::atomic<bool> held_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread renewer_;
};

// The state of lock object `key`: nullopt if it does not exist, else
// whether its lease is live (by the store's clock) and who holds it.
struct LeaseState {
  bool live = false;
  std::string holder;  // "command (pid P on HOST, since T)"
  std::string etag;
};
Result<std::optional<LeaseState>> InspectLease(S3Client* client, const std::string& key);

// The lease length in seconds: CBT_S3_LEASE_SECONDS if set (at least 3),
// else 120.
int DefaultLeaseSeconds();

}  // namespace cbt::objstore

#endif  // CBT_OBJSTORE_LEASE_H_
