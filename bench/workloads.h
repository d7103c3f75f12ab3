// The benchmark workloads, shared by ckpt_bench and train_loop_bench.
//   gpt2  — GPT-2-small (124M float32 parameters in 148 tensors) + Adam's exp_avg and
//           exp_avg_sq: 1.49 GB, as a model_state / optimizer_state checkpoint
//   small — 20,000 tensors of 1-64 KiB
//   huge  — one tensor over 4 GiB (ZIP64)
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "ckpt/ckpt.h"

namespace bench {

// name -> tensor, in the order a checkpoint lists them
inline std::vector<std::pair<std::string, at::Tensor>> gpt2_params() {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {{"wte.weight", {50257, 768}},
                                                                      {"wpe.weight", {1024, 768}}};
  for (int l = 0; l < 12; ++l) {
    std::string h = "h." + std::to_string(l) + ".";
    shapes.push_back({h + "ln_1.weight", {768}});
    shapes.push_back({h + "ln_1.bias", {768}});
    shapes.push_back({h + "attn.c_attn.weight", {768, 2304}});
    shapes.push_back({h + "attn.c_attn.bias", {2304}});
    shapes.push_back({h + "attn.c_proj.weight", {768, 768}});
    shapes.push_back({h + "attn.c_proj.bias", {768}});
    shapes.push_back({h + "ln_2.weight", {768}});
    shapes.push_back({h + "ln_2.bias", {768}});
    shapes.push_back({h + "mlp.c_fc.weight", {768, 3072}});
    shapes.push_back({h + "mlp.c_fc.bias", {3072}});
    shapes.push_back({h + "mlp.c_proj.weight", {3072, 768}});
    shapes.push_back({h + "mlp.c_proj.bias", {768}});
  }
  shapes.push_back({"ln_f.weight", {768}});
  shapes.push_back({"ln_f.bias", {768}});
  std::vector<std::pair<std::string, at::Tensor>> out;
  int i = 0;
  for (auto& [n, s] : shapes) out.emplace_back(n, at::empty(s, at::kFloat).fill_(0.001 * ++i));
  return out;
}

// The workload as a checkpoint value, plus a flat list of its tensors (for the baselines).
inline ckpt::Value make_workload(const std::string& w, std::vector<std::pair<std::string, at::Tensor>>* flat) {
  ckpt::Value root = ckpt::Value::new_dict();
  if (w == "gpt2") {
    auto params = gpt2_params();
    ckpt::Value model = ckpt::Value::ordered_dict();
    ckpt::Value state = ckpt::Value::new_dict();
    std::vector<ckpt::Value> ids;
    int64_t i = 0;
    for (auto& [name, t] : params) {
      model.dict().set(name, ckpt::Value(t));
      flat->emplace_back("model." + name, t);
      ckpt::Value s = ckpt::Value::new_dict();
      at::Tensor step = at::scalar_tensor(1000.0, at::kFloat), m = at::empty_like(t).fill_(0.5),
                 v = at::empty_like(t).fill_(0.25);
      s.dict().set("step", ckpt::Value(step));
      s.dict().set("exp_avg", ckpt::Value(m));
      s.dict().set("exp_avg_sq", ckpt::Value(v));
      flat->emplace_back("opt." + std::to_string(i) + ".step", step);
      flat->emplace_back("opt." + std::to_string(i) + ".exp_avg", m);
      flat->emplace_back("opt." + std::to_string(i) + ".exp_avg_sq", v);
      state.dict().set(i, s);
      ids.push_back(i++);
    }
    ckpt::Value group = ckpt::Value::new_dict();
    group.dict().set("lr", 6e-4);
    group.dict().set("betas", ckpt::Value::tuple({0.9, 0.95}));
    group.dict().set("params", ckpt::Value::list(ids));
    ckpt::Value opt = ckpt::Value::new_dict();
    opt.dict().set("state", state);
    opt.dict().set("param_groups", ckpt::Value::list({group}));
    root.dict().set("model_state", model);
    root.dict().set("optimizer_state", opt);
    root.dict().set("step", 1000);
  } else if (w == "small") {
    for (int i = 0; i < 20000; ++i) {
      int64_t bytes = 1024 * (1 + (int64_t(i) * 37) % 64);
      at::Tensor t = at::empty({bytes / 4}, at::kFloat).fill_(float(i));
      root.dict().set("t" + std::to_string(i), ckpt::Value(t));
      flat->emplace_back("t" + std::to_string(i), t);
    }
  } else if (w == "huge") {
    at::Tensor big = at::empty({(int64_t{1} << 32) + (int64_t{200} << 20)}, at::kByte).fill_(7);
    at::Tensor small = at::ones({3});
    root.dict().set("big", ckpt::Value(big));
    root.dict().set("small", ckpt::Value(small));
    flat->emplace_back("big", big);
    flat->emplace_back("small", small);
  } else {
    throw std::runtime_error("unknown workload " + w);
  }
  return root;
}

}  // namespace bench
