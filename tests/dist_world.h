// Thread ranks for ckpt::dist tests: N ranks in one process over one c10d::HashStore and one
// Gloo device, each rank's function on its own thread, with a watchdog that ends the process
// when a test's ranks have not all returned in time (every wait in these tests is bounded).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <map>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/error.h"

namespace {

using namespace std::chrono_literals;

struct Outcome {
  bool ok = true;
  ckpt::ErrorKind kind = ckpt::ErrorKind::kIO;
  std::string what;
};

class World {
 public:
  // `groups` process groups per rank over the same ranks (the second: an async commit group).
  explicit World(int n, std::chrono::milliseconds pg_timeout = 60s, int groups = 1) : n_(n) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto device = c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    pgs_.resize(n);
    side_.resize(n);
    run_threads([&](int r) {
      auto o = c10d::ProcessGroupGloo::Options::create(pg_timeout);
      o->devices.push_back(device);
      o->threads = 1;
      pgs_[r] = c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, n, o);
      if (groups > 1)
        side_[r] = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("side", store),
                                                               r, n, o);
    });
  }
  // Rank r's second group (World(n, timeout, 2)).
  c10d::ProcessGroup& side(int r) { return *side_.at(r); }
  int size() const { return n_; }

  // fn(rank, group) on every rank, each in its own thread; what each one threw.
  std::vector<Outcome> run(const std::function<void(int, c10d::ProcessGroup&)>& fn) {
    std::vector<Outcome> out(n_);
    run_threads([&](int r) {
      try {
        fn(r, *pgs_[r]);
      } catch (const ckpt::Error& e) {
        out[r] = {false, e.kind(), e.what()};
      } catch (const std::exception& e) {
        out[r] = {false, ckpt::ErrorKind::kIO, std::string("not a ckpt::Error: ") + e.what()};
      }
    });
    return out;
  }

 private:
  void run_threads(const std::function<void(int)>& fn) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog([&] {
      std::unique_lock<std::mutex> lock(mu);
      if (!cv.wait_for(lock, 120s, [&] { return done; })) {
        std::fprintf(stderr, "dist_test: the ranks did not all return within 120 s\n");
        std::_Exit(3);
      }
    });
    std::vector<std::thread> ts;
    for (int r = 0; r < n_; ++r) ts.emplace_back([&, r] { fn(r); });
    for (auto& t : ts) t.join();
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    watchdog.join();
  }
  int n_;
  std::vector<c10::intrusive_ptr<c10d::ProcessGroupGloo>> pgs_, side_;
};

// A port on 127.0.0.1 that nothing listens on now.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Starts `world` real rank processes as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT on a free port, plus `env`), each this test binary running only the gtest
// `filter` (a DISABLED_ worker test); their wait statuses. Each is SIGKILLed after 60 s.
inline std::vector<int> run_rank_processes(int world, const std::string& filter,
                                           const std::map<std::string, std::string>& env) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      const std::string f = "--gtest_filter=" + filter;
      ::execl("/proc/self/exe", "rank", "--gtest_also_run_disabled_tests", f.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<int> status(world, -1);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (int done = 0; done < world;) {
    for (int r = 0; r < world; ++r)
      if (status[r] == -1) {
        int st = 0;
        if (::waitpid(pids[r], &st, WNOHANG) == pids[r]) {
          status[r] = st;
          ++done;
        }
      }
    if (std::chrono::steady_clock::now() > deadline)
      for (int r = 0; r < world; ++r)
        if (status[r] == -1) ::kill(pids[r], SIGKILL);
    std::this_thread::sleep_for(10ms);
  }
  return status;
}

}  // namespace
