// The installed ckpt::dist in someone else's program: a run directory through the distributed
// run manager, on a process group built from torchrun's environment (run.sh sets it for one rank).
#include <ckpt/checkpoint.h>
#include <ckpt/distributed_manager.h>
#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ckpt::dist::Group group = ckpt::dist::init_from_env();
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  ckpt::TrainingState state;
  state.model = model;
  state.optimizer = &optimizer;
  ckpt::dist::CheckpointManager manager(argv[1], *group.pg);
  manager.restore(state);
  optimizer.zero_grad();
  model->forward(torch::ones({4, 3})).sum().backward();
  optimizer.step();
  ++state.step;
  manager.save(state);
  const auto records = ckpt::list_run(argv[1]);
  std::cout << "consumer_dist: step " << state.step << ", " << records.size() << " checkpoints in " << argv[1] << "\n";
  return records.back().step == state.step ? 0 : 1;
}
