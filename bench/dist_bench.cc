// dist_bench: ckpt::dist save / load on N thread ranks of one process (one HashStore, one Gloo
// device), for N = 1, 2, 4, 8, 16, 32. The state: `mb` MB of replicated tensors (64 of them)
// plus `mb` MB of one row-sharded tensor. Prints, per N: save (all ranks done), the commit
// (save of a state with no tensors: the collectives, metadata and rename alone), load into
// the same world size, and metadata.json's size.
//   dist_bench [DIR] [mb]     (durable saves: fsync as in production)
//
//   dist_bench gpt2 DIR [runs]
// GPT-2-small + Adam (1.49 GB; bench/workloads.h) on 2 thread ranks against one process on the
// same state, every figure the median of `runs` (default 3), printed as JSON: one process's
// durable ckpt::save and eager load of one file; the 2-rank replicated save (and the bytes it
// wrote), its commit alone, loads with 1 and 2 ranks; the 2-rank sharded save and load (each
// rank half of every tensor's rows: the bytes each rank writes and reads); the async stall of
// dist::CheckpointManager against one clone of the state.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <algorithm>

#include "ckpt/distributed.h"
#include "ckpt/distributed_manager.h"
#include "workloads.h"

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

namespace fs = std::filesystem;

struct Ranks {
  std::vector<c10::intrusive_ptr<c10d::ProcessGroupGloo>> pgs, side;
  explicit Ranks(int n) : pgs(n), side(n) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto device = c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    on_ranks(n, [&](int r) {
      auto o = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(300));
      o->devices.push_back(device);
      o->threads = 1;
      pgs[r] = c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, n, o);
      side[r] = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("side", store), r,
                                                            n, o);
    });
  }
};

// Replaces every tensor of `v` by what `f` makes of it (its key path for the sharded split).
ckpt::Value map_tensors(const ckpt::Value& v, const std::function<ckpt::Value(const at::Tensor&)>& f) {
  if (v.is_tensor()) return f(v.to_tensor());
  if (v.is_dict()) {
    ckpt::Value out = ckpt::Value(ckpt::Dict(v.dict().flavor()));
    for (const auto& [k, x] : v.dict()) out.dict().set(k, map_tensors(x, f));
    return out;
  }
  if (v.is_list() || v.is_tuple()) {
    std::vector<ckpt::Value> items;
    for (const auto& x : v.items()) items.push_back(map_tensors(x, f));
    return v.is_list() ? ckpt::Value::list(std::move(items)) : ckpt::Value::tuple(std::move(items));
  }
  return v;
}

// Rank r's half of every tensor: rows [lo, hi) of dimension 0 (0-dim tensors stay replicated).
ckpt::Value half(const ckpt::Value& state, int r, int n, bool zero) {
  return map_tensors(state, [&](const at::Tensor& t) {
    if (t.dim() == 0) return ckpt::Value(zero ? at::zeros_like(t) : t);  // Adam's step: replicated
    const int64_t rows = t.size(0), lo = rows * r / n, hi = rows * (r + 1) / n;
    at::Tensor local = t.slice(0, lo, hi);
    if (zero) local = at::zeros_like(local);
    std::vector<int64_t> offsets(t.dim(), 0);
    offsets[0] = lo;
    return ckpt::dist::shard(local, offsets, t.sizes().vec());
  });
}

uint64_t dir_bytes(const fs::path& d) {
  uint64_t b = 0;
  for (const auto& e : fs::directory_iterator(d)) b += fs::file_size(e.path());
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int gpt2(const fs::path& dir, int runs) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> flat;
  ckpt::Value state = bench::make_workload("gpt2", &flat);
  uint64_t state_bytes = 0;
  for (auto& [n, t] : flat) state_bytes += t.nbytes();
  std::map<std::string, std::vector<double>> t;
  uint64_t written_rep = 0, rank_file[2] = {0, 0}, rank_file_sharded[2] = {0, 0};
  Ranks two(2), one(1);
  for (int run = 0; run < runs; ++run) {
    const fs::path single = dir / "single.pt", rep = dir / "rep", shd = dir / "shd", empty = dir / "empty";
    fs::remove_all(single);
    fs::remove_all(rep);
    fs::remove_all(shd);
    fs::remove_all(empty);
    double t0 = 0;
    // The three saves of the same bytes in an order rotated every run: on this VM whichever
    // write comes first after a pause runs faster, and the medians must not inherit that.
    const fs::path rep1 = dir / "rep1";
    fs::remove_all(rep1);
    for (int k = 0; k < 3; ++k) {
      switch ((k + run) % 3) {
        case 0:
          t0 = now();
          ckpt::save(state, single.string());
          t["single_save"].push_back(now() - t0);
          break;
        case 1:
          t0 = now();
          ckpt::dist::save(state, rep1.string(), *one.pgs[0]);
          t["rep_save_1"].push_back(now() - t0);
          break;
        default:
          t0 = now();
          on_ranks(2, [&](int r) { ckpt::dist::save(state, rep.string(), *two.pgs[r]); });
          t["rep_save"].push_back(now() - t0);
      }
    }
    fs::remove_all(rep1);
    t0 = now();
    { ckpt::Value back = ckpt::load(single.string()); }
    t["single_load"].push_back(now() - t0);
    written_rep = dir_bytes(rep);
    rank_file[0] = fs::file_size(rep / "rank-00000.pt");
    rank_file[1] = fs::file_size(rep / "rank-00001.pt");
    t0 = now();
    on_ranks(2, [&](int r) {
      ckpt::Value s = ckpt::Value::new_dict();
      s.dict().set("step", 7);
      ckpt::dist::save(s, empty.string(), *two.pgs[r]);
    });
    t["commit"].push_back(now() - t0);
    for (int n : {1, 2}) {
      Ranks& g = n == 1 ? one : two;
      std::vector<ckpt::Value> tmpl(n);
      for (int r = 0; r < n; ++r) tmpl[r] = map_tensors(state, [](const at::Tensor& x) { return ckpt::Value(at::zeros_like(x)); });
      t0 = now();
      on_ranks(n, [&](int r) { ckpt::dist::load(tmpl[r], rep.string(), *g.pgs[r]); });
      t[n == 1 ? "rep_load_1" : "rep_load_2"].push_back(now() - t0);
    }
    std::vector<ckpt::Value> halves = {half(state, 0, 2, false), half(state, 1, 2, false)};
    t0 = now();
    on_ranks(2, [&](int r) { ckpt::dist::save(halves[r], shd.string(), *two.pgs[r]); });
    t["shd_save"].push_back(now() - t0);
    rank_file_sharded[0] = fs::file_size(shd / "rank-00000.pt");
    rank_file_sharded[1] = fs::file_size(shd / "rank-00001.pt");
    std::vector<ckpt::Value> zeros = {half(state, 0, 2, true), half(state, 1, 2, true)};
    t0 = now();
    on_ranks(2, [&](int r) { ckpt::dist::load(zeros[r], shd.string(), *two.pgs[r]); });
    t["shd_load"].push_back(now() - t0);

    // Async: the stall of a (second) save() on each rank against one copy of the state into
    // memory already touched, as for one process's AsyncSaver.
    {
      ckpt::Value c = map_tensors(state, [](const at::Tensor& x) { return ckpt::Value(x.clone()); });
      std::vector<at::Tensor> src, dst;
      map_tensors(state, [&](const at::Tensor& x) { src.push_back(x); return ckpt::Value(x); });
      map_tensors(c, [&](const at::Tensor& x) { dst.push_back(x); return ckpt::Value(x); });
      t0 = now();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
      t["memcpy"].push_back(now() - t0);
    }
    const fs::path runs_dir = dir / "run";
    fs::remove_all(runs_dir);
    std::vector<double> stall(2);
    on_ranks(2, [&](int r) {
      ckpt::ManagerOptions o;
      o.async = true;
      o.model_key = "";
      ckpt::dist::ManagerInit init;
      init.commit_group = two.side[r].get();
      ckpt::dist::CheckpointManager m(runs_dir.string(), *two.pgs[r], o, init);
      m.save(state, 1);  // the first save touches the snapshot's memory; the second reuses it
      m.wait();
      double s0 = now();
      m.save(state, 2);
      stall[r] = now() - s0;
      m.wait();
    });
    t["async_stall"].push_back(std::max(stall[0], stall[1]));
  }
  auto M = [&](const char* k) { return median(t[k]); };
  std::printf(
      "{\"state_bytes\": %llu, \"runs\": %d,\n"
      " \"single_save_s\": %.4f, \"single_load_s\": %.4f,\n"
      " \"rep_save_1_s\": %.4f, \"rep_save_s\": %.4f, \"rep_written_bytes\": %llu, \"rep_rank_file_bytes\": [%llu, %llu],\n"
      " \"commit_s\": %.4f, \"rep_load_1_s\": %.4f, \"rep_load_2_s\": %.4f,\n"
      " \"shd_save_s\": %.4f, \"shd_load_s\": %.4f, \"shd_rank_file_bytes\": [%llu, %llu],\n"
      " \"memcpy_s\": %.4f, \"async_stall_s\": %.4f}\n",
      (unsigned long long)state_bytes, runs, M("single_save"), M("single_load"), M("rep_save_1"), M("rep_save"),
      (unsigned long long)written_rep, (unsigned long long)rank_file[0], (unsigned long long)rank_file[1], M("commit"),
      M("rep_load_1"), M("rep_load_2"), M("shd_save"), M("shd_load"), (unsigned long long)rank_file_sharded[0],
      (unsigned long long)rank_file_sharded[1], M("memcpy"), M("async_stall"));
  fs::remove_all(dir);
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "gpt2") {
    at::set_num_threads(1);
    return gpt2(argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "ckpt_dist_bench_gpt2",
                argc > 3 ? std::atoi(argv[3]) : 3);
  }
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
