// dist_bench: ckpt::dist save / load on N thread ranks of one process (one HashStore, one Gloo
// device), for N = 1, 2, 4, 8, 16, 32. The state: `mb` MB of replicated tensors (64 of them)
// plus `mb` MB of one row-sharded tensor. Prints, per N: save (all ranks done), the commit
// (save of a state with no tensors: the collectives, metadata and rename alone), load into
// the same world size, and metadata.json's size.
//   dist_bench [DIR] [mb]     (durable saves: fsync as in production)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "ckpt/distributed.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void on_ranks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        std::_Exit(1);
      }
    });
  for (auto& t : ts) t.join();
}

ckpt::Value state(int r, int n, int64_t mb, bool zero) {
  ckpt::Value s = ckpt::Value::new_dict();
  const int64_t per = mb * (1 << 20) / 4 / 64;
  for (int i = 0; i < 64; ++i) {
    at::Tensor t = zero ? at::zeros({per}) : at::full({per}, float(i));
    s.dict().set("rep." + std::to_string(i), ckpt::Value(t));
  }
  const int64_t rows = 1024, cols = mb * (1 << 20) / 4 / rows;
  const int64_t lo = rows * r / n, hi = rows * (r + 1) / n;
  s.dict().set("emb",
               ckpt::dist::shard(zero ? at::zeros({hi - lo, cols}) : at::ones({hi - lo, cols}), {lo, 0}, {rows, cols}));
  s.dict().set("step", 7);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path dir = argc > 1 ? argv[1] : fs::temp_directory_path() / "ckpt_dist_bench";
  const int64_t mb = argc > 2 ? std::atoll(argv[2]) : 16;
  at::set_num_threads(1);
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::printf("| ranks | save (s) | commit only (s) | load (s) | metadata.json (bytes) |\n|---|---|---|---|---|\n");
  for (int n : {1, 2, 4, 8, 16, 32}) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto device = c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    std::vector<c10::intrusive_ptr<c10d::ProcessGroupGloo>> pgs(n);
    on_ranks(n, [&](int r) {
      auto o = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(120));
      o->devices.push_back(device);
      o->threads = 1;
      pgs[r] = c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, n, o);
    });
    const std::string ck = (dir / ("n" + std::to_string(n))).string();
    const std::string empty = (dir / ("e" + std::to_string(n))).string();
    std::vector<ckpt::Value> states(n);
    for (int r = 0; r < n; ++r) states[r] = state(r, n, mb, false);
    uint64_t meta = 0;
    double t0 = now();
    on_ranks(n, [&](int r) {
      auto res = ckpt::dist::save(states[r], ck, *pgs[r]);
      if (r == 0) meta = res.metadata_bytes;
    });
    const double save_s = now() - t0;
    t0 = now();
    on_ranks(n, [&](int r) {
      ckpt::Value s = ckpt::Value::new_dict();
      s.dict().set("step", 7);
      ckpt::dist::save(s, empty, *pgs[r]);
    });
    const double commit_s = now() - t0;
    for (int r = 0; r < n; ++r) states[r] = state(r, n, mb, true);
    t0 = now();
    on_ranks(n, [&](int r) { ckpt::dist::load(states[r], ck, *pgs[r]); });
    const double load_s = now() - t0;
    std::printf("| %d | %.3f | %.3f | %.3f | %llu |\n", n, save_s, commit_s, load_s, (unsigned long long)meta);
    std::fflush(stdout);
  }
  fs::remove_all(dir);
  return 0;
}
