// The few collectives ckpt::dist runs (a save, a load, a run's commit), each bounded by a
// timeout: a rank that died surfaces at once ("Connection closed by peer"), a silent one after
// the timeout, both as a ckpt::Error (kIO) saying which step failed.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "ckpt/error.h"

namespace ckpt::dist {

// Waits for `work`; throws kIO naming `what` when it fails or times out.
void wait_for(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout, const char* what);

// An outcome that travels between ranks: ok, or an error kind and message; plus a number.
struct Status {
  bool ok = true;
  ErrorKind kind = ErrorKind::kIO;
  uint64_t number = 0;
  std::string message;  // up to about 4 KiB travel
  static Status error(const Error& e) { return {false, e.kind(), 0, e.what()}; }
};

// Every rank gets rank 0's status (one broadcast).
Status broadcast_status(c10d::ProcessGroup& pg, const Status& mine, std::chrono::milliseconds timeout,
                        const char* what);
// Every rank gets every rank's status, by rank (two allgathers: lengths, then the bytes).
std::vector<Status> all_statuses(c10d::ProcessGroup& pg, const Status& mine, std::chrono::milliseconds timeout,
                                 const char* what);
// Rank 0 gets every rank's bytes (two collectives: lengths, then the padded bytes); the other
// ranks get an empty vector.
std::vector<std::string> gather_bytes(c10d::ProcessGroup& pg, const std::string& mine,
                                      std::chrono::milliseconds timeout);

}  // namespace ckpt::dist
