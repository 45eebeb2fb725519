// SPDX-License-Identifier: Apache-2.0
//
// The pool-wide budget of NBD connections per host.  xapi-nbd serves at
// most 16 connections per host; when several VMs are backed up at once,
// each disk read takes its connections from this budget before it connects
// and gives them back when it is done, so the sum over all running reads
// stays within the limit of every host.
//
// Thread-safety: every member may be called from any thread.
// Errors: Acquire returns Aborted once the process is interrupted
// (util/interrupt.h) while it waits; it never fails otherwise.
#ifndef CBT_BACKUP_CONNECTION_BUDGET_H_
#define CBT_BACKUP_CONNECTION_BUDGET_H_

#include "util/status.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace cbt::backup {

class ConnectionBudget {
 public:
  // `per_host` connections (at least 1) for each host.
  explicit ConnectionBudget(int per_host);

  // Takes up to `wanted` connections on every host of `hosts` at once (the
  // same number on each), as many as all of them have free, at least 1:
  // waits while some host has none free.  Returns the number granted.
  Result<int> Acquire(const std::vector<std::string>& hosts, int wanted);
  // Gives back `n` connections on every host of `hosts`.
  void Release(const std::vector<std::string>& hosts, int n);

  // Connections of `host` in use now, and the most ever in use at once.
  int InUse(const std::string& host) const;
  int Peak(const std::string& host) const;
  int per_host() const { return per_host_; }

 private:
  const int per_host_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> used_;
  std::map<std::string, int> peak_;
};

// Connections taken from a budget, given back when it goes out of scope.
class BudgetLease {
 public:
  BudgetLease() = default;
  BudgetLease(ConnectionBudget* budget, std::vector<std::string> hosts, int n)
      : budget_(budget), hosts_(std::move(hosts)), n_(n) {}
  BudgetLease(const BudgetLease&) = delete;
  BudgetLease& operator=(const BudgetLease&) = delete;
  ~BudgetLease() {
    if (budget_ != nullptr && n_ > 0) budget_->Release(hosts_, n_);
  }

 private:
  ConnectionBudget* budget_ = nullptr;
  std::vector<std::string> hosts_;
  int n_ = 0;
};

}  // namespace cbt::backup

#endif  // CBT_BACKUP_CONNECTION_BUDGET_H_
