// SPDX-License-Identifier: Apache-2.0
//
// The per-host NBD connection budget: counters under one lock, waiters
// woken on every release.
#include "backup/connection_budget.h"

#include "util/interrupt.h"

#include <algorithm>
#include <chrono>
#include <set>

namespace cbt::backup {

ConnectionBudget::ConnectionBudget(int per_host) : per_host_(std::max(1, per_host)) {}

Result<int> ConnectionBudget::Acquire(const std::vector<std::string>& hosts, int wanted) {
  wanted = std::max(1, wanted);
  // A host listed twice is one host: it must be charged once.
  const std::set<std::string> unique(hosts.begin(), hosts.end());
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    int grant = std::min(wanted, per_host_);
    for (const auto& h : unique) {
      auto it = used_.find(h);
      grant = std::min(grant, per_host_ - (it == used_.end() ? 0 : it->second));
    }
    if (grant >= 1) {
      for (const auto& h : unique) {
        int& u = used_[h];
        u += grant;
        peak_[h] = std::max(peak_[h], u);
      }
      return grant;
    }
    // Signals do not wake a condition variable: look at the flag often.
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    CBT_RETURN_IF_ERROR(CheckInterrupted());
  }
}

void ConnectionBudget::Release(const std::vector<std::string>& hosts, int n) {
  const std::set<std::string> unique(hosts.begin(), hosts.end());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& h : unique) {
      int& u = used_[h];
      u = std::max(0, u - n);
    }
  }
  cv_.notify_all();
}

int ConnectionBudget::InUse(const std::string& host) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = used_.find(host);
  return it == used_.end() ? 0 : it->second;
}

int ConnectionBudget::Peak(const std::string& host) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peak_.find(host);
  return it == peak_.end() ? 0 : it->second;
}

}  // namespace cbt::backup
