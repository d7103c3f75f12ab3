// The run manager on plain values: names, index, retention, cadence, resume and its fallback,
// orphans and leftovers, the lock, async commits, disk space and a fault at every OS call.
#include "ckpt/manager.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "ckpt/preemption.h"
#include "crash_env.h"
#include "fault_env.h"
#include "format/archive.h"
#include "manager/run_dir.h"
#include "test_util.h"

namespace ckpt {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::TempDir;

// A checkpoint in TrainingState's layout: a model entry, step, epoch, metrics, and `mb` MiB of
// optimizer-like state.
Value make_checkpoint(int64_t step, int64_t epoch, double val_loss, size_t mb = 0) {
  Value model = Value::ordered_dict();
  auto w = make_storage(DType::kFloat32, 64 * sizeof(float));
  auto* f = reinterpret_cast<float*>(w->data());
  for (int i = 0; i < 64; ++i) f[i] = float(step * 1000 + i);
  TensorRef t;
  t.dtype = DType::kFloat32;
  t.storage = w;
  t.sizes = {8, 8};
  t.strides = {8, 1};
  model.dict().set("fc.weight", Value(t));
  Value ck = Value::new_dict();
  ck.dict().set("model_state", model);
  if (mb > 0) {
    auto big = make_storage(DType::kUInt8, mb << 20);
    std::memset(big->data(), int(step & 0xff), big->nbytes());
    TensorRef b;
    b.dtype = DType::kUInt8;
    b.storage = big;
    b.sizes = {static_cast<int64_t>(big->nbytes())};
    b.strides = {1};
    ck.dict().set("optimizer_state", Value(b));
  }
  ck.dict().set("epoch", epoch);
  ck.dict().set("step", step);
  Value metrics = Value::new_dict();
  metrics.dict().set("val_loss", val_loss);
  ck.dict().set("metrics", metrics);
  return ck;
}

bool save(CheckpointManager& m, int64_t step, int64_t epoch, double val_loss, size_t mb = 0) {
  return m.save(make_checkpoint(step, epoch, val_loss, mb), step, epoch, {{"val_loss", val_loss}});
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> steps_of(const std::vector<CheckpointRecord>& records) {
  std::vector<int64_t> out;
  for (const auto& r : records) out.push_back(r.step);
  return out;
}

ManagerOptions quiet(ManagerOptions o = {}) {
  o.durable = false;  // tests run on tmpfs or ext4 alike; durability is not what they check
  o.warn = [](const std::string&) {};
  return o;
}

// --- names and the index -------------------------------------------------------------------------

TEST(NameTemplate, FormatsPaddedNamesThatSortAndParsesThemBack) {
  run::NameTemplate t("epoch={epoch:03}-step={step:06}-val_loss={val_loss:.4f}");
  EXPECT_EQ(t.format(7, 3500, {{"val_loss", 0.31204}}), "epoch=007-step=003500-val_loss=0.3120.pt");
  EXPECT_EQ(t.format(7, 3500, {}), "epoch=007-step=003500-val_loss=NA.pt");
  int64_t step = -1, epoch = -1;
  EXPECT_TRUE(t.parse("epoch=007-step=003500-val_loss=0.3120.pt", &step, &epoch));
  EXPECT_EQ(step, 3500);
  EXPECT_EQ(epoch, 7);
  EXPECT_FALSE(t.parse("epoch=007-step=003500-val_loss=0.3120.pt.bak", &step, &epoch));
  EXPECT_FALSE(t.parse("notes.pt", &step, &epoch));
  EXPECT_FALSE(t.parse("best.pt", &step, &epoch));
  EXPECT_LT(t.format(1, 900, {{"val_loss", 1}}), t.format(1, 1000, {{"val_loss", 1}}));
}

TEST(NameTemplate, RefusesTemplatesWithoutStepOrWithPathCharacters) {
  expect_error([] { run::NameTemplate("epoch={epoch}"); }, ErrorKind::kInvalidArgument, "must contain {step}");
  expect_error([] { run::NameTemplate("../x-{step}"); }, ErrorKind::kInvalidArgument, "not allowed");
  expect_error([] { run::NameTemplate("x-{step:q}"); }, ErrorKind::kInvalidArgument, "format 'q'");
}

TEST(Manager, SavesOneFilePerCheckpointWithIndexAndLatestPointer) {
  TempDir dir;
  std::string run = dir.file("run");
  {
    CheckpointManager m(run, quiet());
    EXPECT_TRUE(save(m, 100, 0, 0.5));
    EXPECT_TRUE(save(m, 200, 1, 0.4));
    EXPECT_TRUE(save(m, 300, 2, 0.45));
  }
  EXPECT_EQ(files_in(run), (std::vector<std::string>{".lock", "epoch=000-step=000100.pt", "epoch=001-step=000200.pt",
                                                     "epoch=002-step=000300.pt", "index.json", "latest"}));
  EXPECT_EQ(test::read_file(run + "/latest"), "epoch=002-step=000300.pt\n");
  auto records = list_run(run);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(steps_of(records), (std::vector<int64_t>{100, 200, 300}));
  EXPECT_TRUE(records[2].latest);
  EXPECT_EQ(records[1].epoch, 1);
  EXPECT_DOUBLE_EQ(records[1].metrics.at("val_loss"), 0.4);
  EXPECT_EQ(records[0].bytes, fs::file_size(records[0].path));
  // The index's content CRC is the file's (recomputed from its zip directory).
  EXPECT_EQ(records[0].content_crc, format::read_content_crc(io::Env::Default(), records[0].path));
  // Readable JSON with the documented fields.
  auto j = nlohmann::json::parse(test::read_file(run + "/index.json"));
  EXPECT_EQ(j["format"], "ckpt-run/1");
  EXPECT_EQ(j["checkpoints"][0]["file"], "epoch=000-step=000100.pt");
  EXPECT_TRUE(j["checkpoints"][0].contains("time"));
  EXPECT_EQ(j["latest"], "epoch=002-step=000300.pt");
  // Every file is a checkpoint torch.load reads, with the saved content.
  Value ck = load(records[1].path);
  EXPECT_EQ(ck["step"].to_int(), 200);
}

TEST(Manager, SavingTwiceAtOneStepIsANoOp) {
  TempDir dir;
  CheckpointManager m(dir.file("run"), quiet());
  EXPECT_TRUE(save(m, 10, 0, 1.0));
  EXPECT_FALSE(save(m, 10, 0, 1.0));
  EXPECT_EQ(m.checkpoints().size(), 1u);
}

TEST(Manager, ANewManagerContinuesTheIndexAndTheNoOpRule) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    save(m, 10, 0, 1.0);
  }
  CheckpointManager m(dir.file("run"), quiet());
  EXPECT_FALSE(save(m, 10, 0, 1.0));  // the latest is at step 10 already
  EXPECT_TRUE(save(m, 20, 0, 1.0));
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{10, 20}));
}

// --- retention -----------------------------------------------------------------------------------

TEST(Retention, KeepLastDeletesOnlyAfterTheNewCommit) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.keep_last = 2;
  CheckpointManager m(dir.file("run"), o);
  for (int s = 1; s <= 5; ++s) save(m, s * 10, 0, 1.0);
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{40, 50}));
  EXPECT_FALSE(fs::exists(dir.file("run/epoch=000-step=000030.pt")));
  EXPECT_TRUE(fs::exists(dir.file("run/epoch=000-step=000050.pt")));
}

TEST(Retention, KeepBestByMinOrMaxPlusLatest) {
  const std::vector<double> losses = {0.9, 0.3, 0.7, 0.2, 0.8, 0.6};
  for (Mode mode : {Mode::kMin, Mode::kMax}) {
    TempDir dir;
    ManagerOptions o = quiet();
    o.keep_best = 2;
    o.monitor = "val_loss";
    o.mode = mode;
    CheckpointManager m(dir.file("run"), o);
    for (size_t i = 0; i < losses.size(); ++i) save(m, int64_t(i + 1), 0, losses[i]);
    if (mode == Mode::kMin) {
      EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{2, 4, 6}));  // 0.3, 0.2 + latest
      EXPECT_EQ(m.best()->step, 4);
    } else {
      EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1, 5, 6}));  // 0.9, 0.8 + latest
      EXPECT_EQ(m.best()->step, 1);
    }
  }
}

TEST(Retention, PoliciesCombineAndMilestonesStay) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.keep_last = 1;
  o.keep_best = 1;
  o.monitor = "val_loss";
  o.keep_every_steps = 50;
  CheckpointManager m(dir.file("run"), o);
  // steps 10..120 every 10; best loss at step 30.
  for (int s = 10; s <= 120; s += 10) save(m, s, s / 40, s == 30 ? 0.1 : 1.0 + s);
  // milestones: first at/after 50 (50) and 100 (100); best 30; last 120.
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{30, 50, 100, 120}));
}

TEST(Retention, MilestonesByEpochAndByTime) {
  std::vector<CheckpointRecord> rs;
  for (int i = 0; i < 8; ++i) {
    CheckpointRecord r;
    r.file = "c" + std::to_string(i);
    r.step = i * 10;
    r.epoch = i / 2;              // epochs 0 0 1 1 2 2 3 3
    r.unix_time = 1000 + i * 30;  // every 30 s
    rs.push_back(r);
  }
  RetentionPolicy epochs;
  epochs.keep_every_epochs = 2;
  auto keep = run::retained(rs, epochs, 1000, {});
  EXPECT_EQ(keep, (std::vector<bool>{false, false, false, false, true, false, false, false}));  // epoch 2
  RetentionPolicy minutes;
  minutes.keep_every_minutes = 1;
  keep = run::retained(rs, minutes, 1000, {});
  EXPECT_EQ(keep, (std::vector<bool>{false, false, true, false, true, false, true, false}));  // 60, 120, 180 s
  RetentionPolicy none;
  keep = run::retained(rs, none, 1000, {});
  EXPECT_EQ(std::count(keep.begin(), keep.end(), true), 8);  // no policy keeps everything
}

TEST(Retention, NeverTouchesFilesItDoesNotRecognise) {
  TempDir dir;
  fs::create_directories(dir.file("run"));
  test::write_file(dir.file("run/notes.txt"), "mine");
  test::write_file(dir.file("run/model-final.pt"), "mine too");
  test::write_file(dir.file("run/.hidden.tmp-x"), "and this");
  ManagerOptions o = quiet();
  o.keep_last = 1;
  {
    CheckpointManager m(dir.file("run"), o);
    for (int s = 1; s <= 3; ++s) save(m, s, 0, 1.0);
  }
  EXPECT_EQ(test::read_file(dir.file("run/notes.txt")), "mine");
  EXPECT_EQ(test::read_file(dir.file("run/model-final.pt")), "mine too");
  EXPECT_TRUE(fs::exists(dir.file("run/.hidden.tmp-x")));
}

TEST(Retention, PruneRunAppliesAPolicyLaterAndDryRunDeletesNothing) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    for (int s = 1; s <= 6; ++s) save(m, s, 0, s == 2 ? 0.1 : 1.0);
  }
  RetentionPolicy p;
  p.keep_last = 2;
  auto would = prune_run(dir.file("run"), p, /*dry_run=*/true);
  EXPECT_EQ(steps_of(would), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(list_run(dir.file("run")).size(), 6u);
  p.keep_best = 1;
  p.monitor = "val_loss";
  auto gone = prune_run(dir.file("run"), p);
  EXPECT_EQ(steps_of(gone), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(steps_of(list_run(dir.file("run"))), (std::vector<int64_t>{2, 5, 6}));
  EXPECT_FALSE(fs::exists(dir.file("run/epoch=000-step=000001.pt")));
}

// --- the best model ------------------------------------------------------------------------------

TEST(Best, KeptApartAsFullCheckpointAndWeightsOnlyFile) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.monitor = "val_loss";
  o.keep_last = 1;
  CheckpointManager m(dir.file("run"), o);
  save(m, 1, 0, 0.5);
  save(m, 2, 0, 0.2);  // best
  save(m, 3, 0, 0.4);
  save(m, 4, 0, 0.3);
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{2, 4}));  // the best survives keep_last=1
  auto best = m.best();
  ASSERT_TRUE(best);
  EXPECT_EQ(best->step, 2);
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat(best->path.c_str(), &a), 0);
  ASSERT_EQ(::stat(dir.file("run/best.pt").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // best.pt is the same file, not a copy
  Value weights = load(dir.file("run/best_model.pt"));
  ASSERT_TRUE(weights.is_dict());
  EXPECT_EQ(weights.size(), 1u);
  EXPECT_FLOAT_EQ(reinterpret_cast<const float*>(weights["fc.weight"].tensor().storage->data())[0], 2000.f);
  auto j = nlohmann::json::parse(test::read_file(dir.file("run/index.json")));
  EXPECT_EQ(j["best"], best->file);
}

TEST(Best, RegeneratedWhenItsFilesAreMissing) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.monitor = "val_loss";
  {
    CheckpointManager m(dir.file("run"), o);
    save(m, 1, 0, 0.5);
  }
  fs::remove(dir.file("run/best_model.pt"));
  fs::remove(dir.file("run/best.pt"));
  CheckpointManager m(dir.file("run"), o);
  EXPECT_TRUE(fs::exists(dir.file("run/best_model.pt")));
  EXPECT_TRUE(fs::exists(dir.file("run/best.pt")));
}

// --- cadence -------------------------------------------------------------------------------------

TEST(Cadence, EveryNStepsEveryNEpochsEveryTMinutes) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.save_every_steps = 3;
  o.save_every_epochs = 2;
  CheckpointManager m(dir.file("run"), o);
  std::vector<int64_t> due;
  for (int64_t s = 1; s <= 10; ++s)
    if (m.should_save_step(s)) due.push_back(s);
  EXPECT_EQ(due, (std::vector<int64_t>{3, 6, 9}));
  EXPECT_FALSE(m.should_save_epoch(0));
  EXPECT_TRUE(m.should_save_epoch(1));
  EXPECT_FALSE(m.should_save_epoch(2));
  EXPECT_TRUE(m.should_save_epoch(3));

  TempDir dir2;
  ManagerOptions t = quiet();
  t.save_every_minutes = 1.0 / 60;  // 1 s: long enough that a loaded or sanitized run is not late
  CheckpointManager timed(dir2.file("run"), t);
  EXPECT_FALSE(timed.should_save_step(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_TRUE(timed.should_save_step(2));
  save(timed, 2, 0, 1.0);
  EXPECT_FALSE(timed.should_save_step(3));  // the clock restarts at each save
}

// --- resume --------------------------------------------------------------------------------------

TEST(Resume, AnEmptyOrNewDirectoryIsAFreshStart) {
  TempDir dir;
  CheckpointManager m(dir.file("new/run"), quiet());
  RestoreResult r = m.load();
  EXPECT_FALSE(r.restored);
  EXPECT_TRUE(r.skipped.empty());
}

TEST(Resume, LatestBestStepAndPath) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.monitor = "val_loss";
  CheckpointManager m(dir.file("run"), o);
  save(m, 1, 0, 0.5);
  save(m, 2, 0, 0.1);
  save(m, 3, 1, 0.3);
  EXPECT_EQ(m.load().checkpoint["step"].to_int(), 3);
  EXPECT_EQ(m.load(ResumeFrom::best()).checkpoint["step"].to_int(), 2);
  EXPECT_EQ(m.load(ResumeFrom::parse("step=1")).checkpoint["step"].to_int(), 1);
  test::write_file(dir.file("other.pt"), "");
  save(make_checkpoint(77, 4, 0.0), dir.file("other.pt"));
  RestoreResult r = m.load(ResumeFrom::parse(dir.file("other.pt")));
  EXPECT_EQ(r.record.step, 77);
  EXPECT_EQ(r.record.epoch, 4);
  EXPECT_FALSE(m.load(ResumeFrom::parse("none")).restored);
  expect_error([&] { m.load(ResumeFrom::at_step(5)); }, ErrorKind::kNotFound, "no checkpoint at step 5");
  expect_error([] { ResumeFrom::parse("step=x"); }, ErrorKind::kInvalidArgument, "step=N");
}

void flip_byte_in_last_record(const std::string& path) {
  std::string bytes = test::read_file(path);
  // The optimizer record sits near the end; flip a byte in the middle of the file's data.
  bytes[bytes.size() / 2] ^= 0x40;
  test::write_file(path, bytes);
}

TEST(Resume, FallsBackPastADamagedNewestCheckpointWithAWarning) {
  TempDir dir;
  std::vector<std::string> warnings;
  ManagerOptions o = quiet();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  {
    CheckpointManager m(dir.file("run"), o);
    save(m, 1, 0, 1.0, 1);
    save(m, 2, 0, 1.0, 1);
    save(m, 3, 0, 1.0, 1);
  }
  std::string newest = dir.file("run/epoch=000-step=000003.pt");
  flip_byte_in_last_record(newest);
  CheckpointManager m(dir.file("run"), o);
  RestoreResult r = m.load();
  ASSERT_TRUE(r.restored);
  EXPECT_EQ(r.record.step, 2);
  ASSERT_EQ(r.skipped.size(), 1u);
  EXPECT_NE(r.skipped[0].find(newest), std::string::npos) << r.skipped[0];
  EXPECT_NE(r.skipped[0].find("CRC-32 mismatch"), std::string::npos) << r.skipped[0];
  bool warned = false;
  for (const auto& w : warnings)
    warned |= w.find(newest) != std::string::npos && w.find("skipping") != std::string::npos;
  EXPECT_TRUE(warned);
  // The index remembers: the damaged one is flagged, and latest points at the good one.
  auto records = list_run(dir.file("run"));
  EXPECT_FALSE(records[2].damaged.empty());
  EXPECT_TRUE(records[1].latest);
  EXPECT_EQ(test::read_file(dir.file("run/latest")), "epoch=000-step=000002.pt\n");
  // A new save after the fallback becomes the latest; retention may now remove the damaged one.
  save(m, 3, 0, 1.0, 1);
  EXPECT_EQ(m.latest()->step, 3);
  EXPECT_TRUE(m.latest()->damaged.empty());
  EXPECT_EQ(load(newest)["step"].to_int(), 3);
}

TEST(Resume, FallsBackPastAMissingTruncatedOrSwappedFile) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    for (int s = 1; s <= 4; ++s) save(m, s, 0, 1.0);
  }
  fs::remove(dir.file("run/epoch=000-step=000004.pt"));            // missing
  fs::resize_file(dir.file("run/epoch=000-step=000003.pt"), 100);  // truncated
  // step 2's file replaced by a valid checkpoint that is not the one committed
  save(make_checkpoint(99, 0, 0.0), dir.file("run/epoch=000-step=000002.pt"));
  CheckpointManager m(dir.file("run"), quiet());
  RestoreResult r = m.load();
  ASSERT_TRUE(r.restored);
  EXPECT_EQ(r.record.step, 1);
  ASSERT_EQ(r.skipped.size(), 3u);
  EXPECT_NE(r.skipped[0].find("missing"), std::string::npos) << r.skipped[0];
  EXPECT_NE(r.skipped[2].find("content CRC"), std::string::npos) << r.skipped[2];
}

TEST(Resume, NothingThatVerifiesIsAnErrorNotAFreshStart) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    save(m, 1, 0, 1.0);
  }
  fs::resize_file(dir.file("run/epoch=000-step=000001.pt"), 10);
  CheckpointManager m(dir.file("run"), quiet());
  expect_error([&] { m.load(); }, ErrorKind::kCorruption, "no checkpoint verifies");
}

// --- a crash's leftovers -------------------------------------------------------------------------

TEST(Recovery, TempFilesOfOurNamesAreRemovedAtStartOthersStay) {
  TempDir dir;
  fs::create_directories(dir.file("run"));
  test::write_file(dir.file("run/.epoch=000-step=000005.pt.tmp-123-0"), "partial");
  test::write_file(dir.file("run/.index.json.tmp-123-1"), "partial");
  test::write_file(dir.file("run/.notes.txt.tmp-123-2"), "not ours");
  CheckpointManager m(dir.file("run"), quiet());
  EXPECT_FALSE(fs::exists(dir.file("run/.epoch=000-step=000005.pt.tmp-123-0")));
  EXPECT_FALSE(fs::exists(dir.file("run/.index.json.tmp-123-1")));
  EXPECT_TRUE(fs::exists(dir.file("run/.notes.txt.tmp-123-2")));
  EXPECT_TRUE(m.checkpoints().empty());
}

TEST(Recovery, AnOrphanThatVerifiesIsAdoptedAndOneThatDoesNotIsNeverListed) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    save(m, 1, 0, 1.0);
  }
  // A commit interrupted after step 4: durable file, no index entry.
  save(make_checkpoint(2, 0, 0.25), dir.file("run/epoch=000-step=000002.pt"));
  // A damaged file under one of our names (not written by us): left alone, never listed.
  test::write_file(dir.file("run/epoch=000-step=000003.pt"), "garbage");
  std::vector<std::string> warnings;
  ManagerOptions o = quiet();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointManager m(dir.file("run"), o);
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(m.checkpoints()[1].metrics.at("val_loss"), 0.25);
  EXPECT_EQ(m.load().record.step, 2);
  EXPECT_TRUE(fs::exists(dir.file("run/epoch=000-step=000003.pt")));
  ASSERT_EQ(warnings.size(), 2u);  // one adopted, one left alone (in directory order)
  EXPECT_EQ(std::count_if(warnings.begin(), warnings.end(),
                          [](const std::string& w) {
                            return w.find("step=000003.pt: not in the run index and does not verify") !=
                                   std::string::npos;
                          }),
            1);
}

TEST(Recovery, AnInterruptedRetentionPassIsFinishedNotUndone) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    for (int s = 1; s <= 3; ++s) save(m, s, 0, 1.0);
  }
  // As if the process died between the index flip (step 7) and the deletions (step 9).
  auto index = *run::read_index(io::Env::Default(), dir.file("run"));
  index.records.erase(index.records.begin());
  index.pending_delete = {"epoch=000-step=000001.pt"};
  run::write_index(io::Env::Default(), dir.file("run"), index, false);
  CheckpointManager m(dir.file("run"), quiet());
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{2, 3}));  // not adopted back
  EXPECT_FALSE(fs::exists(dir.file("run/epoch=000-step=000001.pt")));
}

TEST(Recovery, ADamagedIndexIsRebuiltFromTheFiles) {
  TempDir dir;
  {
    CheckpointManager m(dir.file("run"), quiet());
    for (int s = 1; s <= 3; ++s) save(m, s, 0, 1.0 / s);
  }
  test::write_file(dir.file("run/index.json"), "{ not json");
  std::vector<std::string> warnings;
  ManagerOptions o = quiet();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointManager m(dir.file("run"), o);
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(m.load().record.step, 3);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings[0].find("index.json: damaged run index"), std::string::npos) << warnings[0];
  expect_error([&] { run::from_json("[]", "d"); }, ErrorKind::kCorruption, "not a ckpt run index");
}

// --- one writer ----------------------------------------------------------------------------------

TEST(Lock, ASecondWriterFailsAtOnceNamingTheHolderAndADeadHolderDoesNotBlock) {
  TempDir dir;
  fs::create_directories(dir.file("run"));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    CheckpointManager m(dir.file("run"), quiet());
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    ::pause();  // hold the lock until killed
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  expect_error([&] { CheckpointManager m(dir.file("run"), quiet()); }, ErrorKind::kIO, "pid " + std::to_string(child));
  RetentionPolicy keep1;
  keep1.keep_last = 1;
  expect_error([&] { prune_run(dir.file("run"), keep1); }, ErrorKind::kIO, "pid " + std::to_string(child));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CheckpointManager m(dir.file("run"), quiet());  // the dead process's lock is gone with it
  EXPECT_TRUE(save(m, 1, 0, 1.0));
}

// --- async ---------------------------------------------------------------------------------------

TEST(Async, CommitsInTheBackgroundAndRetentionWaitsForTheCommit) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.async = true;
  o.keep_last = 2;
  CheckpointManager m(dir.file("run"), o);
  for (int s = 1; s <= 6; ++s) {
    Value ck = make_checkpoint(s, 0, 1.0, 2);
    m.save(ck, s, 0, {{"val_loss", 1.0}});
    // The caller may change the state at once: the snapshot was taken.
    std::memset(ck["optimizer_state"].tensor().storage->data(), 0xEE, 1 << 20);
  }
  m.wait();
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{5, 6}));
  Value last = load(m.latest()->path);
  EXPECT_EQ(static_cast<int>(last["optimizer_state"].tensor().storage->data()[0]), 6);
}

TEST(Async, AFailedBackgroundSaveIsRaisedAtTheNextCallAndNothingIsHarmed) {
  TempDir dir;
  test::OpFaultEnv env;
  ManagerOptions o = quiet();
  o.async = true;
  o.durable = true;
  o.env = &env;
  CheckpointManager m(dir.file("run"), o);
  save(m, 1, 0, 1.0);
  m.wait();
  std::string before = test::read_file(m.latest()->path);
  env.fail_kind = test::OpFaultEnv::kSync;
  env.fail_at = env.kind_calls[test::OpFaultEnv::kSync];  // the next fsync: the new file's
  env.error = EIO;
  save(m, 2, 0, 1.0);  // returns after the snapshot; fails in the background
  expect_error([&] { m.wait(); }, ErrorKind::kIO, "fsync failed");
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1}));
  EXPECT_EQ(test::read_file(m.latest()->path), before);
  EXPECT_TRUE(save(m, 3, 0, 1.0));  // still usable
  m.wait();
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1, 3}));
  for (const auto& name : files_in(dir.file("run"))) EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
}

size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

TEST(Async, ResidentMemoryAfter100SavesEqualsThatAfter2) {
  TempDir dir;
  ManagerOptions o = quiet();
  o.async = true;
  o.keep_last = 1;
  CheckpointManager m(dir.file("run"), o);
  Value ck = make_checkpoint(0, 0, 1.0, 8);  // 8 MiB of state
  size_t after2 = 0;
  for (int s = 1; s <= 100; ++s) {
    m.save(ck, s, 0, {{"val_loss", 1.0}});
    if (s == 2) {
      m.wait();
      after2 = resident_bytes();
    }
  }
  m.wait();
  size_t after100 = resident_bytes();
  // Snapshot buffers are reused: no growth beyond noise (one more snapshot would be 8 MiB).
  EXPECT_LT(after100, after2 + (size_t{4} << 20)) << after2 << " -> " << after100;
}

// --- disk space, faults --------------------------------------------------------------------------

TEST(Faults, TooLittleFreeSpaceFailsBeforeWritingAndSaysHowMuch) {
  TempDir dir;
  test::OpFaultEnv env;
  ManagerOptions o = quiet();
  o.env = &env;
  CheckpointManager m(dir.file("run"), o);
  save(m, 1, 0, 1.0);
  env.free_bytes = 1000;
  expect_error([&] { save(m, 2, 0, 1.0, 1); }, ErrorKind::kIO, "not enough disk space");
  try {
    save(m, 2, 0, 1.0, 1);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1000 bytes) available"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("epoch=000-step=000002.pt"), std::string::npos) << e.what();
  }
  EXPECT_EQ(steps_of(m.checkpoints()), (std::vector<int64_t>{1}));
  env.free_bytes = 0;
  EXPECT_TRUE(save(m, 2, 0, 1.0, 1));
}

// The state a crash-point test starts from: two committed checkpoints (the second the best).
struct Fixture {
  TempDir dir;
  std::string run = dir.file("run");
  std::map<std::string, std::string> bytes;  // file -> content, of the committed checkpoints
  ManagerOptions options() {
    ManagerOptions o = quiet();
    o.durable = true;
    o.keep_last = 2;
    o.monitor = "val_loss";
    return o;
  }
  Fixture() {
    CheckpointManager m(run, options());
    save(m, 1, 0, 0.5);
    save(m, 2, 0, 0.4);
    for (const auto& r : m.checkpoints()) bytes[r.file] = test::read_file(r.path);
  }
};

// Right after a failure, before anything recovers: what the index lists is complete, verifies
// and (for the older ones) is byte-for-byte what it was; every pointer names a listed file.
void check_as_left(Fixture& fx, const std::string& context) {
  SCOPED_TRACE(context + " (as left)");
  auto records = list_run(fx.run);
  ASSERT_FALSE(records.empty());
  for (const auto& r : records) {
    EXPECT_NO_THROW(verify(r.path)) << r.path;
    if (fx.bytes.count(r.file)) EXPECT_EQ(test::read_file(r.path), fx.bytes[r.file]) << r.file;
  }
  std::string latest = test::read_file(fx.run + "/latest");
  ASSERT_FALSE(latest.empty());
  EXPECT_TRUE(fs::exists(fx.run + "/" + latest.substr(0, latest.size() - 1))) << latest;
  EXPECT_NO_THROW(verify(fx.run + "/best_model.pt"));
  EXPECT_NO_THROW(verify(fx.run + "/best.pt"));
}

// After the next start: only complete checkpoints listed, each verifies, the older ones are
// untouched, resume picks the newest good one, no temp file survives.
void check_consistent(Fixture& fx, const std::string& context) {
  SCOPED_TRACE(context);
  CheckpointManager m(fx.run, fx.options());
  auto records = m.checkpoints();
  ASSERT_FALSE(records.empty());
  for (const auto& r : records) {
    EXPECT_NO_THROW(verify(r.path)) << r.path;
    if (fx.bytes.count(r.file)) EXPECT_EQ(test::read_file(r.path), fx.bytes[r.file]) << r.file;
  }
  RestoreResult r = m.load();
  ASSERT_TRUE(r.restored);
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_GE(r.record.step, 2);
  for (const auto& name : files_in(fx.run)) EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
  // The best files hold the best checkpoint.
  EXPECT_NO_THROW(verify(fx.run + "/best_model.pt"));
  EXPECT_EQ(test::read_file(fx.run + "/best.pt"), test::read_file(m.best()->path));
}

TEST(Faults, AFailureAtEveryOsCallOfASaveAndCommitLeavesTheRunConsistent) {
  // Count the calls of one clean save (a new best, so the best files are written too, and a
  // retention pass deletes the older checkpoint).
  int64_t total = 0;
  std::vector<std::string> trace;
  {
    Fixture fx;
    test::OpFaultEnv env;
    ManagerOptions o = fx.options();
    o.env = &env;
    CheckpointManager m(fx.run, o);
    env.trace.clear();
    int64_t start = env.calls;
    save(m, 3, 0, 0.1);
    total = env.calls - start;
    trace = env.trace;
  }
  ASSERT_GT(total, 15);  // create, writes, fsync, close, rename, sync-dir for 4 files, link, removes
  int failed = 0;
  for (int64_t n = 0; n < total; ++n) {
    for (int err : {EIO, ENOSPC}) {
      Fixture fx;
      test::OpFaultEnv env;
      ManagerOptions o = fx.options();
      o.env = &env;
      bool threw = false;
      const std::string where = "fault at call " + std::to_string(n) + " (" + trace[size_t(n)] + ")";
      {
        CheckpointManager m(fx.run, o);
        env.error = err;
        env.fail_at = env.calls + n;
        try {
          save(m, 3, 0, 0.1);
        } catch (const Error& e) {
          threw = true;
          ++failed;
          std::string what = e.what();
          EXPECT_EQ(e.kind(), ErrorKind::kIO) << what;
          EXPECT_NE(what.find(fx.run), std::string::npos) << "error names no file: " << what;
          EXPECT_NE(what.find("step=000003"), std::string::npos) << "error names no step: " << what;
          EXPECT_NE(what.find(std::strerror(err)), std::string::npos) << what;
        }
        check_as_left(fx, where);
        // The manager stays usable after a failure.
        if (threw) EXPECT_NO_THROW(save(m, 4, 0, 0.3)) << env.failed_step;
      }
      check_consistent(fx, where);
    }
  }
  // Every call failed the save but the deletions (which never report) and the free-space query
  // (no answer only skips the early check).
  int64_t tolerated = std::count_if(trace.begin(), trace.end(), [](const std::string& t) {
    return t.rfind("remove ", 0) == 0 || t.rfind("free-space ", 0) == 0;
  });
  EXPECT_EQ(failed, 2 * (total - tolerated));
  std::cout << "[ walked  ] " << total << " OS calls of one save + commit, each failed with EIO and ENOSPC\n";
}

TEST(Faults, APowerCutAtEveryOsCallOfASaveAndCommitLosesNothingCommitted) {
  // The same walk, but at each call the machine stops: nothing after it runs, and everything not
  // yet synced (file data, directory entries) is lost. Then the checks of the next start.
  int64_t total = 0;
  std::vector<std::string> trace;
  {
    Fixture fx;
    test::CrashEnv env(fx.dir.file("stash"));
    ManagerOptions o = fx.options();
    o.env = &env;
    CheckpointManager m(fx.run, o);
    int64_t start = env.calls;
    save(m, 3, 0, 0.1);
    total = env.calls - start;
    trace.assign(env.trace.begin() + start, env.trace.end());
  }
  ASSERT_GT(total, 15);
  for (int64_t n = 0; n <= total; ++n) {
    Fixture fx;
    test::CrashEnv env(fx.dir.file("stash"));
    ManagerOptions o = fx.options();
    o.env = &env;
    std::string where;
    bool returned = false;
    {
      CheckpointManager m(fx.run, o);
      env.crash_at = env.calls + n;
      where =
          n < total ? "power cut at call " + std::to_string(n) + " (before " : "power cut after the save returned (";
      try {
        save(m, 3, 0, 0.1);
        returned = true;
      } catch (const test::CrashEnv::Crash&) {
      }
      where +=
          (n < total ? "the call after " : "") + (env.trace.empty() ? std::string("start") : env.trace.back()) + ")";
      // The save returns only when the cut came after its last call, or left it nothing but
      // retention's deletions (which never report).
      bool only_removes_left =
          std::all_of(trace.begin() + n, trace.end(), [](const std::string& t) { return t.rfind("remove ", 0) == 0; });
      EXPECT_EQ(returned, only_removes_left) << where;
    }  // the manager's destructor runs against a dead machine: it can do nothing
    env.simulate_crash();
    check_as_left(fx, where);
    check_consistent(fx, where);
    // A save that returned is durable.
    if (returned) EXPECT_EQ(list_run(fx.run).back().step, 3) << where;
  }
  std::cout << "[ walked  ] " << total + 1 << " power-cut points of one save + commit\n";
}

TEST(Progress, SavesAndLoadsReportBytesUpToTheTotal) {
  TempDir dir;
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ManagerOptions o = quiet();
  o.progress = [&](uint64_t done, uint64_t total) { calls.push_back({done, total}); };
  CheckpointManager m(dir.file("run"), o);
  save(m, 1, 0, 1.0, 80);  // 80 MiB: several progress slices
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_GE(calls.back().second, uint64_t{80} << 20);
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  calls.clear();
  m.load();
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back().first, calls.back().second);
}

// --- preemption ----------------------------------------------------------------------------------

TEST(Preemption, AFirstSignalSetsTheFlagASecondEndsTheProcess) {
  pid_t child = ::fork();
  if (child == 0) {
    PreemptionGuard guard;
    ::raise(SIGTERM);
    if (!guard.requested() || guard.signal() != SIGTERM) ::_exit(10);
    ::raise(SIGINT);  // the second: default action, the process ends here
    ::_exit(11);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit code " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
}

TEST(Preemption, ASignalWhileTheRunDirectoryIsOpenedIsCaughtNotFatal) {
  // A job scheduler sends SIGTERM whenever it likes; the first file the manager writes (index.json)
  // is what a watcher sees first, so by then the guard must already be in place.
  TempDir dir;
  pid_t child = ::fork();
  if (child == 0) {
    test::FaultEnv env;
    env.pause_after = 0;
    env.on_pause = [] { ::raise(SIGTERM); };
    ManagerOptions o = quiet();
    o.handle_preemption = true;
    o.env = &env;
    CheckpointManager m(dir.file("run"), o);
    ::_exit(env.on_pause == nullptr && m.preemption_requested() ? 0 : 12);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_FALSE(WIFSIGNALED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Preemption, TheGuardRestoresThePreviousHandlers) {
  struct sigaction before {};
  ::sigaction(SIGTERM, nullptr, &before);
  {
    PreemptionGuard guard(/*also_sigusr1=*/true);
    ::raise(SIGUSR1);
    EXPECT_TRUE(guard.requested());
    guard.clear();
  }
  struct sigaction after {};
  ::sigaction(SIGTERM, nullptr, &after);
  EXPECT_EQ(before.sa_handler, after.sa_handler);
}

}  // namespace
}  // namespace ckpt
