// Fashion-MNIST from the gzip IDX files of Debian's dataset-fashion-mnist.
#pragma once

#include <torch/types.h>

#include <string>

namespace ckpt::train {

struct Split {
  torch::Tensor images;  // float32 [N, 1, 28, 28], pixels / 255
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.size(0); }
};

struct FashionMnist {
  Split train, val, test;
};

// The 60k training images split into the first `train_samples` (at most 60000 - val_samples)
// for training and the last `val_samples` for validation; the 10k test images. Throws
// std::runtime_error naming the file and the problem.
FashionMnist load_fashion_mnist(const std::string& dir, int64_t train_samples, int64_t val_samples);

}  // namespace ckpt::train
