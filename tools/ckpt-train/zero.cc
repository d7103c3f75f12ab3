#include "zero.h"

#include <algorithm>
#include <cmath>

#ifdef CKPT_WITH_DIST
#include "ckpt/distributed.h"
#endif

namespace ckpt::train {

namespace {

int64_t rows_of(const torch::Tensor& p) {
  return p.dim() == 0 ? 1 : p.size(0);
}

// The rows [r0, r1) of p, sharing its memory (a 0-dim tensor: itself).
torch::Tensor rows(const torch::Tensor& p, int64_t r0, int64_t r1) {
  return p.dim() == 0 ? p : p.slice(0, r0, r1);
}

// `groups` (an optimizer.state_dict()'s param_groups) with each group's "params" replaced by
// the indices 0 .. n-1: the global numbering in a checkpoint, a rank's own in its Adam.
ckpt::Value groups_with_params(const ckpt::Value& groups, size_t n) {
  std::vector<ckpt::Value> ids;
  for (size_t i = 0; i < n; ++i) ids.emplace_back(static_cast<long long>(i));
  ckpt::Value out = ckpt::Value::list();
  for (const auto& g : groups.items()) {
    ckpt::Value group = ckpt::Value::new_dict();
    for (const auto& [k, v] : g.dict())
      group.dict().set(k, k.is_string() && k.to_string() == "params" ? ckpt::Value::list(ids) : v);
    out.items().push_back(group);
  }
  return out;
}

}  // namespace

std::vector<std::vector<RowSlice>> partition_rows(const std::vector<torch::Tensor>& params, int world) {
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  std::vector<std::vector<RowSlice>> out(static_cast<size_t>(world));
  int64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel(), nrows = rows_of(params[i]);
    const double row_elems = nrows ? double(n) / double(nrows) : 1.0;
    // Rank r's elements are [total*r/world, total*(r+1)/world) of all parameters flattened in
    // order; each boundary is rounded to a row of the parameter it falls in, the same way for
    // both ranks that share it, so the rows tile every parameter.
    auto row_at = [&](int64_t b) {
      const double r = std::round(double(b - offset) / row_elems);
      return std::clamp<int64_t>(int64_t(r), 0, nrows);
    };
    for (int r = 0; r < world; ++r) {
      const int64_t r0 = row_at(total * r / world), r1 = row_at(total * (r + 1) / world);
      if (r1 > r0) out[size_t(r)].push_back({i, r0, r1});
    }
    offset += n;
  }
  return out;
}

ShardedAdam::ShardedAdam(std::vector<torch::Tensor> params, const torch::optim::AdamOptions& options,
                         const Ranks& ranks)
    : params_(std::move(params)), slices_(partition_rows(params_, ranks.world())), ranks_(ranks) {
  std::vector<torch::Tensor> own;
  for (const RowSlice& s : slices_[size_t(ranks.rank())]) {
    torch::Tensor v = rows(params_[s.param].detach(), s.r0, s.r1);  // Adam updates the parameter itself
    v.set_requires_grad(true);
    own.push_back(v);
  }
  views_ = own;
  adam_ = std::make_unique<torch::optim::Adam>(own, options);
}

void ShardedAdam::step() {
  const auto& mine = slices_[size_t(ranks_.rank())];
  for (size_t k = 0; k < mine.size(); ++k) {
    const torch::Tensor& g = params_[mine[k].param].grad();
    views_[k].mutable_grad() = g.defined() ? rows(g, mine[k].r0, mine[k].r1) : torch::Tensor();
  }
  adam_->step();
  // Every rank's updated rows in one buffer, broadcast from it: one collective per rank.
  torch::NoGradGuard no_grad;
  for (int r = 0; r < ranks_.world(); ++r) {
    const auto& theirs = slices_[size_t(r)];
    if (theirs.empty()) continue;
    std::vector<torch::Tensor> parts;
    for (const RowSlice& s : theirs) parts.push_back(rows(params_[s.param].detach(), s.r0, s.r1).reshape(-1));
    torch::Tensor flat = torch::cat(parts);
    ranks_.broadcast(flat, r);
    if (r == ranks_.rank()) continue;
    int64_t at = 0;
    for (const RowSlice& s : theirs) {
      torch::Tensor dst = rows(params_[s.param].detach(), s.r0, s.r1);
      dst.copy_(flat.slice(0, at, at + dst.numel()).view(dst.sizes()));
      at += dst.numel();
    }
  }
}

ckpt::Value ShardedAdam::state_dict() const {
  const auto& mine = slices_[size_t(ranks_.rank())];
  ckpt::Value local = ckpt::optimizer_state_dict(*adam_, scheduler_ ? scheduler_->group_extras() : ckpt::GroupExtras{});
  ckpt::Value state = ckpt::Value::new_dict();
  for (const auto& [k, per_slice] : local.at("state").dict()) {
    const RowSlice& s = mine.at(size_t(k.to_int()));
    const torch::Tensor& p = params_[s.param];
    ckpt::Value entry = ckpt::Value::new_dict();
    for (const auto& [name, x] : per_slice.dict()) {
      const bool per_element = x.is_tensor() && x.to_tensor().sizes() == rows(p, s.r0, s.r1).sizes() && p.dim() > 0;
#ifdef CKPT_WITH_DIST
      if (per_element) {  // this rank's rows of exp_avg, exp_avg_sq, ...
        std::vector<int64_t> offsets(size_t(p.dim()), 0);
        offsets[0] = s.r0;
        entry.dict().set(name, ckpt::dist::shard(x.to_tensor(), offsets, p.sizes().vec()));
        continue;
      }
      if (x.is_tensor()) {  // 'step', or a 0-dim parameter's state: written by one rank (the owner of row 0)
        if (s.r0 != 0) continue;
        at::Tensor t = x.to_tensor();
        entry.dict().set(name, ckpt::dist::shard(t, std::vector<int64_t>(size_t(t.dim()), 0), t.sizes().vec()));
        continue;
      }
#endif
      (void)per_element;
      entry.dict().set(name, x);
    }
    state.dict().set(ckpt::Value(static_cast<long long>(s.param)), entry);
  }
  ckpt::Value out = ckpt::Value::new_dict();
  out.dict().set("state", state);
  out.dict().set("param_groups", groups_with_params(local.at("param_groups"), params_.size()));
  return out;
}

void ShardedAdam::load_state_dict(const ckpt::Value& global) {
  const auto& mine = slices_[size_t(ranks_.rank())];
  ckpt::Value state = ckpt::Value::new_dict();
  const ckpt::Dict& saved = global.at("state").dict();
  for (size_t k = 0; k < mine.size(); ++k) {
    const RowSlice& s = mine[k];
    const ckpt::Value* entry = saved.find(ckpt::Value(static_cast<long long>(s.param)));
    if (!entry) continue;
    const torch::Tensor& p = params_[s.param];
    ckpt::Value local = ckpt::Value::new_dict();
    for (const auto& [name, x] : entry->dict()) {
      if (x.is_tensor() && p.dim() > 0 && x.to_tensor().sizes() == p.sizes())
        local.dict().set(name, ckpt::Value(rows(x.to_tensor(), s.r0, s.r1).clone()));  // this rank's rows
      else
        local.dict().set(name, x);
    }
    state.dict().set(ckpt::Value(static_cast<long long>(k)), local);
  }
  ckpt::Value groups = groups_with_params(global.at("param_groups"), mine.size());
  ckpt::Value local = ckpt::Value::new_dict();
  local.dict().set("state", state);
  local.dict().set("param_groups", groups);
  ckpt::load_optimizer_state_dict(*adam_, local);
  if (scheduler_) scheduler_->load_group_extras(groups);  // as in Python, the restored groups' bounds win
}

}  // namespace ckpt::train
