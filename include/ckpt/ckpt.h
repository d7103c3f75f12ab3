// ckpt/ckpt.h — all of ckpt's public API in one include, for LibTorch programs.
//
//   #include <ckpt/ckpt.h>
//   ckpt::Value ck = ckpt::load("ckpt.pt");                          // ckpt/serialize.h
//   at::Tensor w = ck["model_state"]["fc.weight"].to_tensor();       // ckpt/tensor.h
//   ckpt::TrainingState state;  state.model = net;  ...              // ckpt/checkpoint.h
//   ckpt::CheckpointManager manager("runs/exp1", opts);              // ckpt/manager.h
//   ckpt::ResumeReport r = ckpt::check_resume(make_state, train_step); // ckpt/check_resume.h
//
// Each header below states its own contract and thread safety; include one alone to keep a
// compile light (their costs are in bench/RESULTS.md, "Compile times"). The torch-free part —
// ckpt/value.h, ckpt/serialize.h, ckpt/manager.h, ckpt/async.h, ckpt/preemption.h — links
// against ckpt::base alone.
#pragma once

#include "ckpt/async.h"
#include "ckpt/check_resume.h"
#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/manager.h"
#include "ckpt/preemption.h"
#include "ckpt/scheduler.h"
#include "ckpt/serialize.h"
#include "ckpt/tensor.h"
#include "ckpt/training.h"
#include "ckpt/value.h"
