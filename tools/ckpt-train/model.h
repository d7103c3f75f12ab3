// The small CNN ckpt-train trains. Python rebuilds it as
//   nn.Sequential-free: conv1 = Conv2d(1, 32, 3, padding=1), ReLU, MaxPool2d(2),
//   conv2 = Conv2d(32, 64, 3, padding=1), ReLU, MaxPool2d(2), flatten,
//   fc1 = Linear(64*7*7, 128), ReLU, Dropout(0.25), fc2 = Linear(128, 10)
// with parameters conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc1.weight, fc1.bias,
// fc2.weight, fc2.bias and nothing else (see doc/train.md for the Python class).
#pragma once

#include <torch/nn/functional.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

namespace ckpt::train {

struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 32, 3).padding(1)};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(32, 64, 3).padding(1)};
  torch::nn::Linear fc1{64 * 7 * 7, 128};
  torch::nn::Linear fc2{128, 10};

  NetImpl() {
    register_module("conv1", conv1);
    register_module("conv2", conv2);
    register_module("fc1", fc1);
    register_module("fc2", fc2);
  }

  torch::Tensor forward(torch::Tensor x) {
    namespace F = torch::nn::functional;
    x = F::max_pool2d(torch::relu(conv1(x)), F::MaxPool2dFuncOptions(2));
    x = F::max_pool2d(torch::relu(conv2(x)), F::MaxPool2dFuncOptions(2));
    x = torch::relu(fc1(x.flatten(1)));
    x = F::dropout(x, F::DropoutFuncOptions().p(0.25).training(is_training()));
    return fc2(x);
  }
};
TORCH_MODULE(Net);

}  // namespace ckpt::train
