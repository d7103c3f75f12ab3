// A program of someone else's that uses ckpt as an installed package (find_package) or as a
// subproject (add_subdirectory): trains one step, checkpoints through the run manager, reads the
// checkpoint back.
#include <ckpt/checkpoint.h>
#include <ckpt/manager.h>
#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  ckpt::TrainingState state;
  state.model = model;
  state.optimizer = &optimizer;
  ckpt::CheckpointManager manager(argv[1]);
  manager.restore(state);
  optimizer.zero_grad();
  model->forward(torch::ones({4, 3})).sum().backward();
  optimizer.step();
  ++state.step;
  manager.save(state);
  manager.wait();
  ckpt::Value back = ckpt::load(manager.latest()->path);
  std::cout << "consumer: step " << back["step"].to_int() << ", " << manager.checkpoints().size()
            << " checkpoints in " << argv[1] << "\n";
  return back["step"].to_int() == state.step ? 0 : 1;
}
