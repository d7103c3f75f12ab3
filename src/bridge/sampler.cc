// ResumableSampler: a per-epoch permutation that resumes mid-epoch.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>

#include "bridge/guard.h"
#include "ckpt/tensor.h"
#include "ckpt/training.h"
#include "util/errors.h"

namespace ckpt {

ResumableSampler::ResumableSampler(int64_t size, bool shuffle, uint64_t seed)
    : size_(size), shuffle_(shuffle), seed_(seed) {
  if (size < 0) fail(ErrorKind::kInvalidArgument, "ResumableSampler: negative size");
  set_epoch(0);
}

void ResumableSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  index_ = 0;
  at::Tensor order;
  if (shuffle_) {
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(seed_ ^ (static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ull));
    order = at::randperm(size_, gen, at::TensorOptions().dtype(at::kLong));
  } else {
    order = at::arange(size_, at::kLong);
  }
  order_ = make_storage(DType::kInt64, static_cast<size_t>(size_) * sizeof(int64_t));
  if (size_ > 0) std::memcpy(order_->data(), order.data_ptr<int64_t>(), order_->nbytes());
}

std::vector<int64_t> ResumableSampler::next(int64_t batch_size) {
  int64_t n = std::min(batch_size, size_ - index_);
  std::vector<int64_t> out;
  if (n <= 0) return out;
  const int64_t* p = reinterpret_cast<const int64_t*>(order_->data()) + index_;
  out.assign(p, p + n);
  index_ += n;
  return out;
}

Value ResumableSampler::state_dict() const {
  Value v = Value::new_dict();
  v.dict().set("epoch", epoch_);
  v.dict().set("index", index_);
  v.dict().set("size", size_);
  v.dict().set("shuffle", shuffle_);
  v.dict().set("seed", static_cast<int64_t>(seed_));
  TensorRef order;
  order.storage = order_;
  order.dtype = DType::kInt64;
  order.sizes = {size_};
  order.strides = {1};
  v.dict().set("order", Value(std::move(order)));
  return v;
}

void ResumableSampler::load_state_dict(const Value& state) {
  bridge::guard_loader("ResumableSampler.load_state_dict", [&] {
    int64_t size = state["size"].to_int();
    if (size != size_)
      fail(ErrorKind::kMismatch, "ResumableSampler: the checkpoint's dataset has ", size, " samples but this one has ",
           size_);
    bool shuffle = state["shuffle"].to_bool();
    auto seed = static_cast<uint64_t>(state["seed"].to_int());
    int64_t epoch = state["epoch"].to_int();
    int64_t index = state["index"].to_int();
    at::Tensor order = state["order"].to_tensor();
    if (order.scalar_type() != at::kLong || order.numel() != size_)
      fail(ErrorKind::kMismatch, "ResumableSampler: saved order has ", order.numel(), " entries, expected ", size_);
    if (index < 0 || index > size_)
      fail(ErrorKind::kCorruption, "ResumableSampler: position ", index, " outside [0, ", size_, "]");
    order = order.contiguous();
    auto copy = make_storage(DType::kInt64, static_cast<size_t>(size_) * sizeof(int64_t));
    if (size_ > 0) std::memcpy(copy->data(), order.data_ptr<int64_t>(), copy->nbytes());
    shuffle_ = shuffle;
    seed_ = seed;
    epoch_ = epoch;
    index_ = index;
    order_ = std::move(copy);
  });
}

}  // namespace ckpt
