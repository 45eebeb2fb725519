// SPDX-License-Identifier: Apache-2.0
#include "objstore/lease.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>

namespace cbt::objstore {

int DefaultLeaseSeconds() {
  const char* v = std::getenv("CBT_S3_LEASE_SECONDS");
  if (v != nullptr) {
    int n = std::atoi(v);
    if (n >= 3) return n;
  }
  return 120;
}

namespace {

std::string Describe(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) return "an unreadable holder";
  auto s = [&](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : "?";
  };
  std::string pid =
      j.contains("pid") && j["pid"].is_number() ? std::to_string(j["pid"].get<long>()) : "?";
  return s("command") + " (pid " + pid + " on " + s("host") + ", since " + s("started") + ")";
}

}  // namespace

Lease::Lease(S3Client* client, std::string key, std::string body, std::string etag, int seconds)
    : client_(client),
      key_(std::move(key)),
      body_(std::move(body)),
      etag_(std::move(etag)),
      seconds_(seconds) {
  renewer_ = std::thread([this] { Renew(); });
}

Result<std::unique_ptr<Lease>> Lease::Acquire(S3Client* client, const std::string& key,
                                              const std::string& holder_json, int lease_seconds) {
  auto j = nlohmann::json::parse(holder_json, nullptr, false);
  if (!j.is_object()) return Status::InvalidArgument("lease holder must be a JSON object");
  j["lease_seconds"] = lease_seconds;
  const std::string body = j.dump();
  for (int attempt = 0; attempt < 5; ++attempt) {
    PutOptions create;
    create.if_none_match = true;
    auto put = client->Put(key, body, create);
    if (put.ok()) {
      return std::unique_ptr<Lease>(new Lease(client, key, body, *put, lease_seconds));
    }
    if (put.status().code() != Status::Code::kExists) return put.status();
    // Held, or left by a holder that died: read it and its age.
    CBT_ASSIGN_OR_RETURN(auto state, InspectLease(client, key));
    if (!state.has_value()) continue;  // released meanwhile: try again
    if (state->live) {
      return Status::Busy("locked by " + state->holder + " (" + client->url().ToString() + "/" +
                          key + ")");
    }
    // Expired: take it over, conditional on the stale ETag, so that of two
    // contenders only one succeeds.
    PutOptions takeover;
    takeover.if_match = state->etag;
    auto taken = client->Put(key, body, takeover);
    if (taken.ok()) {
      return std::unique_ptr<Lease>(new Lease(client, key, body, *taken, lease_seconds));
    }
    if (taken.status().code() != Status::Code::kExists) return taken.status();
  }
  return Status::Busy("could not take " + key + " (it keeps changing hands)");
}

Result<std::optional<LeaseState>> InspectLease(S3Client* client, const std::string& key) {
  auto head = client->Head(key);
  if (!head.ok()) return head.status();
  if (!head->has_value()) return std::optional<LeaseState>();
  auto text = client->Get(key);
  if (!text.ok()) {
    if (text.status().IsNotFound()) return std::optional<LeaseState>();
    return text.status();
  }
  auto held = nlohmann::json::parse(*text, nullptr, false);
  const int64_t lease = held.is_object() && held.contains("lease_seconds") &&
                                held["lease_seconds"].is_number_integer()
                            ? held["lease_seconds"].get<int64_t>()
                            : 120;
  const ObjectHead& h = **head;
  LeaseState state;
  state.holder = Describe(*text);
  state.etag = h.etag;
  // Without both times the lease cannot be judged stale: taken as live.
  state.live =
      h.server_time == 0 || h.last_modified == 0 || h.server_time <= h.last_modified + lease;
  return std::optional<LeaseState>(state);
}

void Lease::Renew() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (cv_.wait_for(lock, std::chrono::milliseconds(seconds_ * 1000 / 3),
                     [this] { return stop_; })) {
      return;
    }
    PutOptions opt;
    opt.if_match = etag_;
    lock.unlock();
    auto put = client_->Put(key_, body_, opt);
    lock.lock();
    if (put.ok()) {
      etag_ = *put;
    } else {
      held_ = false;
      return;
    }
  }
}

Status Lease::Check() const {
  if (Held()) return Status::Ok();
  return Status::Aborted("the lock " + client_->url().ToString() + "/" + key_ +
                         " was lost (its lease could not be renewed)");
}

Lease::~Lease() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
  if (!held_) return;
  // Remove it only if it is still ours: a lease taken over meanwhile
  // belongs to the new holder.
  auto head = client_->Head(key_);
  if (head.ok() && head->has_value() && (*head)->etag == etag_) (void)client_->Delete(key_);
}

}  // namespace cbt::objstore
