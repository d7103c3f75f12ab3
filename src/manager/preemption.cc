#include "ckpt/preemption.h"

#include <signal.h>

#include <atomic>
#include <cstring>

namespace ckpt {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};
volatile sig_atomic_t g_signal = 0;
std::atomic<int> g_depth{0};
struct sigaction g_previous[3];
bool g_installed[3];

void on_signal(int sig) {
  if (g_signal != 0) {  // the second one: now
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    raise(sig);
    return;
  }
  g_signal = sig;
}

}  // namespace

PreemptionGuard::PreemptionGuard(bool also_sigusr1) {
  if (g_depth++ > 0) return;
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a signal must not make a write or fsync fail with EINTR
  for (int i = 0; i < 3; ++i) {
    g_installed[i] = kSignals[i] != SIGUSR1 || also_sigusr1;
    if (g_installed[i]) sigaction(kSignals[i], &sa, &g_previous[i]);
  }
}

PreemptionGuard::~PreemptionGuard() {
  if (--g_depth > 0) return;
  for (int i = 0; i < 3; ++i)
    if (g_installed[i]) sigaction(kSignals[i], &g_previous[i], nullptr);
}

bool PreemptionGuard::requested() const {
  return g_signal != 0;
}
int PreemptionGuard::signal() const {
  return g_signal;
}
void PreemptionGuard::clear() {
  g_signal = 0;
}

}  // namespace ckpt
