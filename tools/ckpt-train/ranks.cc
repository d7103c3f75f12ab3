#include "ranks.h"

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef CKPT_WITH_DIST
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "ckpt/distributed.h"
#endif

namespace ckpt::train {

struct Ranks::Impl {
#ifdef CKPT_WITH_DIST
  ckpt::dist::Group group;
  c10::intrusive_ptr<c10d::ProcessGroup> commit;
#endif
};

Ranks Ranks::from_env() {
  Ranks r;
  const char* world = std::getenv("WORLD_SIZE");
  if (!world || !*world) return r;
  if (const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT")) r.restart_ = std::atoll(restart);
#ifdef CKPT_WITH_DIST
  r.impl_ = std::make_shared<Impl>();
  r.impl_->group = ckpt::dist::init_from_env();
  r.impl_->commit = ckpt::dist::new_group(r.impl_->group, "ckpt-train-commit");
  r.rank_ = r.impl_->group.rank;
  r.world_ = r.impl_->group.world_size;
  r.group_ = r.impl_->group.pg.get();
  r.commit_group_ = r.impl_->commit.get();
  return r;
#else
  throw std::runtime_error(std::string("WORLD_SIZE=") + world +
                           " is set, but this ckpt-train was built without distributed support (libgloo-dev)");
#endif
}

void Ranks::sum(torch::Tensor& t) const {
#ifdef CKPT_WITH_DIST
  if (!group_) return;
  std::vector<at::Tensor> v{t};
  auto work = group_->allreduce(v);
  if (!work->wait(ckpt::dist::kDefaultTimeout))
    throw std::runtime_error("all-reduce over the ranks did not finish (a rank died or hangs)");
#else
  (void)t;
#endif
}

void Ranks::broadcast(torch::Tensor& t, int root) const {
#ifdef CKPT_WITH_DIST
  if (!group_) return;
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  auto work = group_->broadcast(v, o);
  if (!work->wait(ckpt::dist::kDefaultTimeout))
    throw std::runtime_error("broadcast over the ranks did not finish (a rank died or hangs)");
#else
  (void)t;
  (void)root;
#endif
}

uint64_t rank_seed(int64_t seed, int64_t step, int rank) {
  // splitmix64 over the three numbers: nearby seeds, steps and ranks give unrelated streams.
  uint64_t x = uint64_t(seed) * 0x9E3779B97F4A7C15ull ^ uint64_t(step) * 0xBF58476D1CE4E5B9ull ^
               uint64_t(rank + 1) * 0x94D049BB133111EBull;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace ckpt::train
