// A c10d process group from torchrun's environment, as torch/distributed/rendezvous.py's
// _create_c10d_store and init_process_group("gloo") build one for Python workers.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "ckpt/distributed.h"
#include "util/errors.h"

namespace ckpt::dist {

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  if (v && *v) return v;
  if (fallback) return fallback;
  fail(ErrorKind::kInvalidArgument, "ckpt::dist::init_from_env: ", name,
       " is not set (start the program with torchrun, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
}

int64_t int_env(const char* name, const char* fallback, int64_t lo, int64_t hi) {
  const std::string text = env_or(name, fallback);
  try {
    size_t used = 0;
    const int64_t v = std::stoll(text, &used);
    if (used == text.size() && v >= lo && v <= hi) return v;
  } catch (const std::exception&) {
  }
  fail(ErrorKind::kInvalidArgument, "ckpt::dist::init_from_env: ", name, "='", printable(text, 40),
       "' is not a whole number in [", lo, ", ", hi, "]");
}

}  // namespace

Group init_from_env(const InitOptions& options) {
  Group g;
  g.world_size = static_cast<int>(int_env("WORLD_SIZE", nullptr, 1, 1 << 20));
  g.rank = static_cast<int>(int_env("RANK", nullptr, 0, g.world_size - 1));
  const std::string addr = env_or("MASTER_ADDR", nullptr);
  const int port = static_cast<int>(int_env("MASTER_PORT", nullptr, 1, 65535));
  const int64_t attempt = int_env("TORCHELASTIC_RESTART_COUNT", "0", 0, int64_t{1} << 30);
  const bool agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "False") == "True";
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = !agent_store && g.rank == 0;  // under the agent's store the agent serves it
    so.numWorkers = g.world_size;
    so.waitWorkers = !agent_store;
    so.multiTenant = true;
    so.timeout = options.timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(addr, so);
    // The agent's store outlives restarts: each attempt's keys apart, or attempt 1 reads
    // attempt 0's stale Gloo addresses.
    if (agent_store)
      store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(attempt), store);
    auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname));
    g.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, g.rank, g.world_size, opts);
    g.store = store;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(ErrorKind::kIO, "ckpt::dist::init_from_env: rank ", g.rank, " of ", g.world_size, " at ", addr, ":", port,
         ": ", printable(e.what(), 300));
  }
  return g;
}

c10::intrusive_ptr<c10d::ProcessGroup> new_group(const Group& group, const std::string& name,
                                                 const InitOptions& options) {
  if (!group.store) fail(ErrorKind::kInvalidArgument, "ckpt::dist::new_group: the group has no store");
  try {
    auto store = c10::make_intrusive<c10d::PrefixStore>("/ckpt/" + name, group.store);
    auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname));
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, group.rank, group.world_size, opts);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(ErrorKind::kIO, "ckpt::dist::new_group '", name, "': rank ", group.rank, ": ", printable(e.what(), 300));
  }
}

}  // namespace ckpt::dist
