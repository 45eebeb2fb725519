// SPDX-License-Identifier: Apache-2.0
#include "util/interrupt.h"

#include <signal.h>

#include <atomic>
#include <cstring>

namespace cbt {

namespace {

std::atomic<int> g_signal{0};

// No SA_RESTART: a blocking read or wait returns EINTR and the loop around
// it looks at the flag.
void SetHandler(void (*handler)(int)) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void OnSignal(int sig) {
  g_signal.store(sig);
  SetHandler(SIG_DFL);  // the next one takes the default action
}

}  // namespace

void InstallInterruptHandlers() { SetHandler(OnSignal); }

bool Interrupted() { return g_signal.load(std::memory_order_relaxed) != 0; }

int InterruptSignal() { return g_signal.load(); }

Status CheckInterrupted() {
  const int sig = g_signal.load();
  if (sig == 0) return Status::Ok();
  return Status::Aborted(std::string("interrupted by ") + (sig == SIGINT ? "SIGINT" : "SIGTERM"));
}

}  // namespace cbt
