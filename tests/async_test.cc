#include "ckpt/async.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fault_env.h"
#include "io/env.h"
#include "test_util.h"
#include "util/parallel.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::TempDir;

Value state_with(std::shared_ptr<StorageData> s) {
  TensorRef t;
  t.dtype = s->dtype();
  t.storage = s;
  t.sizes = {static_cast<int64_t>(s->numel())};
  t.strides = {1};
  Value v = Value::new_dict();
  v.dict().set("w", Value(t));
  v.dict().set("step", 1);
  return v;
}

TEST(AsyncSaver, SnapshotIsTakenBeforeSaveReturns) {
  TempDir dir;
  auto storage = make_storage(DType::kFloat32, 4 << 20);  // 4 MiB
  auto* f = reinterpret_cast<float*>(storage->data());
  AsyncSaver saver;
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < storage->numel(); ++i) f[i] = float(round * 10 + i % 7);
    Value v = state_with(storage);
    saver.save(v, dir.file("c" + std::to_string(round) + ".pt"));
    // The caller changes the tensor and the container at once; the file must not see it.
    for (size_t i = 0; i < storage->numel(); ++i) f[i] = -1.f;
    v.dict().set("step", 999);
  }
  saver.wait();
  EXPECT_EQ(saver.pending(), 0u);
  for (int round = 0; round < 3; ++round) {
    Value back = load(dir.file("c" + std::to_string(round) + ".pt"));
    EXPECT_EQ(back["step"].to_int(), 1);
    const float* g = reinterpret_cast<const float*>(back["w"].tensor().storage->data());
    for (size_t i = 0; i < storage->numel(); i += 4097) ASSERT_EQ(g[i], float(round * 10 + i % 7));
  }
}

TEST(AsyncSaver, WaitRaisesTheWriteError) {
  TempDir dir;
  AsyncSaver saver;
  saver.save(state_with(make_storage(DType::kInt64, 64)), dir.file("no/such/dir/c.pt"));
  expect_error([&] { saver.wait(); }, ErrorKind::kNotFound, "no/such/dir/c.pt");
  EXPECT_NO_THROW(saver.wait());  // reported once
}

TEST(AsyncSaver, AnUncollectedErrorSurfacesOnTheNextSave) {
  TempDir dir;
  AsyncSaver saver;
  saver.save(state_with(make_storage(DType::kInt64, 64)), dir.file("missing/c.pt"));
  while (saver.pending() > 0) std::this_thread::yield();
  expect_error([&] { saver.save(state_with(make_storage(DType::kInt64, 64)), dir.file("ok.pt")); },
               ErrorKind::kNotFound, "missing/c.pt");
  saver.save(state_with(make_storage(DType::kInt64, 64)), dir.file("ok.pt"));
  saver.wait();
  EXPECT_TRUE(std::filesystem::exists(dir.file("ok.pt")));
}

// Holds every file creation (the writer thread's first step) until open() is called.
class GateEnv : public io::EnvWrapper {
 public:
  GateEnv() : EnvWrapper(io::Env::Default()), opened_(gate_.get_future().share()) {}
  void open() { gate_.set_value(); }
  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    opened_.wait();
    return target()->new_writable_file(path, direct);
  }

 private:
  std::promise<void> gate_;
  std::shared_future<void> opened_;
};

// With the writer held, max_in_flight saves return at once and the next one waits for a slot.
void check_in_flight_bound(size_t max_in_flight) {
  TempDir dir;
  GateEnv env;
  AsyncSaver saver(max_in_flight);
  SaveOptions options;
  options.env = &env;
  auto s = make_storage(DType::kUInt8, 1 << 20);
  for (size_t i = 0; i < max_in_flight; ++i) saver.save(state_with(s), dir.file(std::to_string(i) + ".pt"), options);
  EXPECT_EQ(saver.pending(), max_in_flight);
  std::atomic<bool> returned{false};
  std::thread extra([&] {
    saver.save(state_with(s), dir.file("extra.pt"), options);
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(returned) << "a save beyond max_in_flight = " << max_in_flight << " did not wait";
  env.open();
  extra.join();
  EXPECT_TRUE(returned);
  saver.wait();
  for (size_t i = 0; i < max_in_flight; ++i) EXPECT_NO_THROW(verify(dir.file(std::to_string(i) + ".pt")));
  EXPECT_NO_THROW(verify(dir.file("extra.pt")));
}

TEST(AsyncSaver, NoMemoryForTheSnapshotFailsTheSaveNotTheSaver) {
  TempDir dir;
  test::OpFaultEnv env;
  env.fail_kind = test::OpFaultEnv::kAlloc;
  env.fail_at = 0;
  SaveOptions o;
  o.env = &env;
  AsyncSaver saver;
  Value v = state_with(make_storage(DType::kFloat32, 1 << 16));
  expect_error([&] { saver.save(v, dir.file("a.pt"), o); }, ErrorKind::kIO, "a.pt: the async save's snapshot");
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.pt")));
  EXPECT_EQ(saver.pending(), 0u);
  saver.save(v, dir.file("a.pt"), o);  // the next save has its memory
  saver.wait();
  EXPECT_NO_THROW(verify(dir.file("a.pt")));
}

TEST(AsyncSaver, SeveralInFlightWhenAskedForAndNoMore) {
  check_in_flight_bound(1);
  check_in_flight_bound(3);
}


// The work-sharing loop of parallel loads and ranged GETs: every task once, on no more threads
// than asked; the first error stops the handing out of tasks and comes back once all stopped.
TEST(ParallelFor, RunsEachTaskOnceAndRethrowsTheFirstErrorAfterAllStop) {
  std::vector<std::atomic<int>> runs(1000);
  std::mutex mu;
  std::set<std::thread::id> ids;
  parallel_for(runs.size(), 3, [&](size_t i) {
    runs[i]++;
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  for (auto& r : runs) EXPECT_EQ(r.load(), 1);
  EXPECT_LE(ids.size(), 3u);
  parallel_for(0, 4, [](size_t) { FAIL() << "no task to run"; });

  std::atomic<int> running{0}, started{0};
  try {
    parallel_for(10000, 4, [&](size_t i) {
      running++;
      started++;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      running--;
      if (i == 5) throw std::runtime_error("task 5 failed");
    });
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "task 5 failed");
    EXPECT_EQ(running.load(), 0);  // no task still runs when the error comes back
  }
  EXPECT_LT(started.load(), 100);  // the rest were never handed out
}
}  // namespace
}  // namespace ckpt
