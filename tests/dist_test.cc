// ckpt::dist on N thread ranks of one process, over one c10d::HashStore and one Gloo device:
// save, commit and load at the same and other world sizes, refusals, hostile metadata, a rank
// that fails mid-save, a rank that never arrives. Every wait is bounded (collective timeouts,
// and a watchdog that ends the process if a test's ranks have not all returned in time).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "ckpt/distributed.h"
#include "ckpt/distributed_files.h"
#include "dist/metadata.h"
#include "dist_world.h"
#include "fault_env.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ckpt::ErrorKind;
using ckpt::Value;

namespace {

class DistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("ckpt_dist_test." + std::to_string(::getpid()) + "." + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

ckpt::dist::SaveOptions fast_save() {
  ckpt::dist::SaveOptions o;
  o.durable = false;
  o.timeout = 20s;
  return o;
}

// The global tensors of the test state: deterministic contents.
at::Tensor global_emb() {
  return at::arange(7 * 5, at::kFloat).reshape({7, 5});
}
at::Tensor global_proj() {
  return at::arange(4 * 9, at::kLong).reshape({4, 9}) * 3;
}

// Rows [lo, hi) of `rows` split as evenly as possible over `world` (the first ones get one more).
std::pair<int64_t, int64_t> split(int64_t rows, int world, int rank) {
  const int64_t base = rows / world, extra = rows % world;
  const int64_t lo = rank * base + std::min<int64_t>(rank, extra);
  return {lo, lo + base + (rank < extra ? 1 : 0)};
}

// The state rank `rank` of `world` trains with; `fill` = false: the same layout, zeroed.
Value make_state(int rank, int world, bool fill) {
  auto pick = [&](at::Tensor t) { return fill ? t : at::zeros_like(t); };
  Value model = Value::ordered_dict();
  model.dict().set("fc.weight", Value(pick(at::linspace(0, 1, 12).reshape({3, 4}))));
  model.dict().set("fc.bias", Value(pick(at::tensor({1.5, -2.0, 3.25}, at::kDouble))));
  model.dict().set("big", Value(pick(at::arange(1000, at::kInt))));
  model.dict().set("scalar", Value(pick(at::tensor(7.0))));
  auto [lo, hi] = split(7, world, rank);  // emb: split by rows
  model.dict().set("emb", ckpt::dist::shard(pick(global_emb().slice(0, lo, hi).clone()), {lo, 0}, {7, 5}));
  auto [clo, chi] = split(9, world, rank);  // proj: split by columns
  model.dict().set("proj", ckpt::dist::shard(pick(global_proj().slice(1, clo, chi).clone()), {0, clo}, {4, 9}));
  Value s = Value::new_dict();
  s.dict().set("model_state", model);
  s.dict().set("step", fill ? Value(1234) : Value(0));
  s.dict().set("name", fill ? Value("run-a") : Value(""));
  s.dict().set("rng", ckpt::dist::per_rank(Value(pick(at::full({4}, rank + 1, at::kLong)))));
  s.dict().set("data_pos", ckpt::dist::per_rank(fill ? Value(100 + rank) : Value(0)));
  Value group = Value::new_dict();  // lists and tuples are walked too
  group.dict().set("lr", fill ? Value(0.1) : Value(0.0));
  group.dict().set("params", Value::list({Value(fill ? 3 : 0), Value(fill ? 4 : 0)}));
  group.dict().set("betas", Value::tuple({Value(pick(at::tensor({0.9, 0.99}, at::kDouble))), Value(fill ? 1 : 0)}));
  s.dict().set("groups", Value::list({group}));
  return s;
}

// What rank `rank` of `world` must hold after loading a state saved by make_state.
void expect_loaded(const Value& s, int rank, int world, bool same_world) {
  const Value& m = s["model_state"];
  EXPECT_TRUE(at::equal(m["fc.weight"].to_tensor(), at::linspace(0, 1, 12).reshape({3, 4}))) << "rank " << rank;
  EXPECT_TRUE(at::equal(m["fc.bias"].to_tensor(), at::tensor({1.5, -2.0, 3.25}, at::kDouble)));
  EXPECT_TRUE(at::equal(m["big"].to_tensor(), at::arange(1000, at::kInt)));
  EXPECT_TRUE(at::equal(m["scalar"].to_tensor(), at::tensor(7.0)));
  auto [lo, hi] = split(7, world, rank);
  EXPECT_TRUE(at::equal(ckpt::dist::shard_info(m["emb"]).local, global_emb().slice(0, lo, hi))) << "rank " << rank;
  auto [clo, chi] = split(9, world, rank);
  EXPECT_TRUE(at::equal(ckpt::dist::shard_info(m["proj"]).local, global_proj().slice(1, clo, chi))) << "rank " << rank;
  EXPECT_EQ(s["step"].to_int(), 1234);
  EXPECT_EQ(s["name"].to_string(), "run-a");
  const Value& g = s["groups"][0];
  EXPECT_EQ(g["lr"].to_double(), 0.1);
  EXPECT_EQ(g["params"][1].to_int(), 4);
  EXPECT_TRUE(at::equal(g["betas"][0].to_tensor(), at::tensor({0.9, 0.99}, at::kDouble)));
  EXPECT_EQ(g["betas"][1].to_int(), 1);
  if (same_world) {
    EXPECT_TRUE(at::equal(s["rng"].to_tensor(), at::full({4}, rank + 1, at::kLong)));
    EXPECT_EQ(s["data_pos"].to_int(), 100 + rank);
  }
}

void expect_all_ok(const std::vector<Outcome>& out) {
  for (size_t r = 0; r < out.size(); ++r) EXPECT_TRUE(out[r].ok) << "rank " << r << ": " << out[r].what;
}

void save_all(World& w, const std::string& dir) {
  expect_all_ok(w.run(
      [&](int r, c10d::ProcessGroup& pg) { ckpt::dist::save(make_state(r, w.size(), true), dir, pg, fast_save()); }));
}

void load_all_and_check(World& w, const std::string& dir, int saved_world) {
  expect_all_ok(w.run([&](int r, c10d::ProcessGroup& pg) {
    Value s = make_state(r, w.size(), false);
    ckpt::dist::LoadOptions lo;
    lo.timeout = 20s;
    ckpt::dist::LoadResult res = ckpt::dist::load(s, dir, pg, lo);
    EXPECT_EQ(res.saved_world_size, saved_world);
    expect_loaded(s, r, w.size(), saved_world == w.size());
    if (saved_world != w.size()) {
      ASSERT_EQ(res.per_rank.count("data_pos"), 1u);
      ASSERT_EQ(res.per_rank.at("data_pos").size(), size_t(saved_world));
      for (int i = 0; i < saved_world; ++i) {
        EXPECT_EQ(res.per_rank.at("data_pos")[i].to_int(), 100 + i);
        EXPECT_TRUE(at::equal(res.per_rank.at("rng")[i].to_tensor(), at::full({4}, i + 1, at::kLong)));
      }
    } else {
      EXPECT_TRUE(res.per_rank.empty());
    }
  }));
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_F(DistTest, SameWorldSizeRoundTripsOnTwoAndFourRanks) {
  for (int n : {2, 4}) {
    World w(n);
    const std::string ck = path("ck" + std::to_string(n));
    save_all(w, ck);
    std::vector<std::string> want{"metadata.json"};
    for (int r = 0; r < n; ++r) want.push_back(ckpt::dist::rank_file_name(r));
    std::sort(want.begin(), want.end());
    EXPECT_EQ(names_in(ck), want);
    // Every replicated tensor written once in total; every rank wrote something.
    auto meta = read_json(ck + "/metadata.json");
    EXPECT_EQ(meta["world_size"], n);
    std::set<int> writers;
    for (const auto& e : meta["entries"])
      if (e["kind"] == "replicated") {
        EXPECT_EQ(e["pieces"].size(), 1u) << e["key"];
        writers.insert(e["pieces"][0]["rank"].get<int>());
      }
    EXPECT_EQ(writers.size(), size_t(std::min(n, 4))) << "replicated tensors spread over the ranks";
    // Each rank file is an ordinary checkpoint.
    Value r0 = ckpt::load(ck + "/rank-00000.pt");
    EXPECT_EQ(r0["step"].to_int(), 1234);
    EXPECT_TRUE(r0.contains("model_state/emb"));
    load_all_and_check(w, ck, n);
  }
}

TEST_F(DistTest, ReshardsTwoToThreeFourToOneOneToFour) {
  for (auto [from, to] : {std::pair{2, 3}, std::pair{4, 1}, std::pair{1, 4}}) {
    const std::string ck = path("ck" + std::to_string(from) + "to" + std::to_string(to));
    {
      World w(from);
      save_all(w, ck);
    }
    World w(to);
    load_all_and_check(w, ck, from);
  }
}

TEST_F(DistTest, ThirtyTwoRanks) {
  World w(32);
  const std::string ck = path("ck32");
  save_all(w, ck);
  EXPECT_EQ(names_in(ck).size(), 33u);
  load_all_and_check(w, ck, 32);
  World w3(3);
  load_all_and_check(w3, ck, 32);
}

TEST_F(DistTest, PlainTensorLoadsWholeFromShards) {
  const std::string ck = path("ck");
  {
    World w(3);
    save_all(w, ck);
  }
  World w(1);
  expect_all_ok(w.run([&](int, c10d::ProcessGroup& pg) {
    Value s = Value::new_dict();
    Value m = Value::new_dict();
    at::Tensor emb = at::zeros({7, 5}), proj = at::zeros({4, 9}, at::kLong);
    m.dict().set("emb", Value(emb));
    m.dict().set("proj", Value(proj));
    s.dict().set("model_state", m);
    ckpt::dist::load(s, ck, pg);
    EXPECT_TRUE(at::equal(emb, global_emb()));
    EXPECT_TRUE(at::equal(proj, global_proj()));
  }));
}

namespace {

// Saves, on `n` ranks, a state whose only entry is rank r's shard(make(r)); expects every rank
// refused with kInvalidArgument mentioning every string of `want`, and nothing published.
void expect_refused(World& w, const std::string& ck, const std::function<Value(int)>& make,
                    const std::vector<std::string>& want) {
  auto out = w.run([&](int r, c10d::ProcessGroup& pg) {
    Value s = Value::new_dict();
    s.dict().set("t", make(r));
    ckpt::dist::save(s, ck, pg, fast_save());
  });
  for (size_t r = 0; r < out.size(); ++r) {
    ASSERT_FALSE(out[r].ok) << "rank " << r;
    EXPECT_EQ(out[r].kind, ErrorKind::kInvalidArgument) << out[r].what;
    for (const auto& s : want) EXPECT_NE(out[r].what.find(s), std::string::npos) << out[r].what << " lacks " << s;
    EXPECT_EQ(out[r].what.find('\n'), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(ck));
  EXPECT_EQ(names_in(fs::path(ck).parent_path()).size(), 0u) << "a temp directory was left";
}

}  // namespace

TEST_F(DistTest, OverlapsHolesAndDisagreementsAreRefusedNamingKeyAndRanks) {
  World w(3);
  // rows [0,3) [2,5) [5,7): ranks 0 and 1 overlap
  expect_refused(w, path("overlap"),
                 [](int r) {
                   int64_t lo = r == 0 ? 0 : r == 1 ? 2 : 5, hi = r == 0 ? 3 : r == 1 ? 5 : 7;
                   return ckpt::dist::shard(at::zeros({hi - lo, 5}), {lo, 0}, {7, 5});
                 },
                 {"key 't'", "ranks 0", "and 1", "overlap"});
  // rows [0,2) [3,5) [5,7): row 2 is nobody's
  expect_refused(w, path("hole"),
                 [](int r) {
                   int64_t lo = r == 0 ? 0 : r == 1 ? 3 : 5, hi = r == 0 ? 2 : r == 1 ? 5 : 7;
                   return ckpt::dist::shard(at::zeros({hi - lo, 5}), {lo, 0}, {7, 5});
                 },
                 {"key 't'", "hole", "[0, 1, 2]"});
  // rank 2 saves float64
  expect_refused(
      w, path("dtype"),
      [](int r) {
        auto [lo, hi] = split(7, 3, r);
        return ckpt::dist::shard(at::zeros({hi - lo, 5}, r == 2 ? at::kDouble : at::kFloat), {lo, 0}, {7, 5});
      },
      {"key 't'", "rank 0", "rank 2", "float64"});
  // rank 1 claims another global shape
  expect_refused(w, path("shape"),
                 [](int r) {
                   auto [lo, hi] = split(7, 3, r);
                   return ckpt::dist::shard(at::zeros({hi - lo, 5}), {lo, 0}, {r == 1 ? 8 : 7, 5});
                 },
                 {"key 't'", "rank 0", "rank 1", "[8, 5]"});
  // a replicated tensor that differs in shape between ranks
  expect_refused(w, path("replicated"), [](int r) { return Value(at::zeros({r == 2 ? 3 : 2})); },
                 {"ranks 0 and 2", "replicated"});
}

TEST_F(DistTest, FailingRankPublishesNothingAndIsNamedByEveryRank) {
  World w(4);
  const std::string a = path("a"), b = path("b");
  save_all(w, a);
  const auto before = names_in(a);
  const std::string meta_before = read_all(a + "/metadata.json");
  // Rank 2's writes fail (ENOSPC through the fault Env).
  ckpt::test::FaultEnv faulty;
  faulty.fail_write_after = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto out = w.run([&](int r, c10d::ProcessGroup& pg) {
    auto o = fast_save();
    if (r == 2) o.env = &faulty;
    ckpt::dist::save(make_state(r, 4, true), b, pg, o);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
  for (int r = 0; r < 4; ++r) {
    ASSERT_FALSE(out[r].ok) << "rank " << r;
    EXPECT_EQ(out[r].kind, ErrorKind::kIO) << out[r].what;
    EXPECT_NE(out[r].what.find("rank 2 failed"), std::string::npos) << out[r].what;
    EXPECT_EQ(out[r].what.find("rank 1 failed"), std::string::npos) << out[r].what;
    EXPECT_EQ(out[r].what.find('\n'), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(b));
  EXPECT_EQ(names_in(dir_), (std::vector<std::string>{"a"})) << "no temp directory left";
  EXPECT_EQ(names_in(a), before);
  EXPECT_EQ(read_all(a + "/metadata.json"), meta_before);
  load_all_and_check(w, a, 4);

  // Rank 3 throws while preparing its state (a dict key ckpt cannot store).
  out = w.run([&](int r, c10d::ProcessGroup& pg) {
    Value s = make_state(r, 4, true);
    if (r == 3) s.dict().set(Value(2.5), Value(1));
    ckpt::dist::save(s, b, pg, fast_save());
  });
  for (int r = 0; r < 4; ++r) {
    ASSERT_FALSE(out[r].ok);
    EXPECT_EQ(out[r].kind, ErrorKind::kInvalidArgument) << out[r].what;
    EXPECT_NE(out[r].what.find("rank 3 failed"), std::string::npos) << out[r].what;
  }
  EXPECT_FALSE(fs::exists(b));
  // And the next save goes through.
  save_all(w, b);
  load_all_and_check(w, b, 4);
}

TEST_F(DistTest, LeftoverTempDirectoriesAreRemovedAndExistingDirectoriesRefused) {
  fs::create_directories(dir_ / ".old.tmp-dist" / "sub");
  std::ofstream(dir_ / ".old.tmp-dist" / "rank-00000.pt") << "partial";
  World w(2);
  save_all(w, path("ck"));
  EXPECT_EQ(names_in(dir_), (std::vector<std::string>{"ck"}));
  auto out = w.run(
      [&](int r, c10d::ProcessGroup& pg) { ckpt::dist::save(make_state(r, 2, true), path("ck"), pg, fast_save()); });
  for (const auto& o : out) {
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.what.find("already exists"), std::string::npos) << o.what;
  }
}

TEST_F(DistTest, ARankThatNeverArrivesTimesOutTheOthers) {
  World w(2, 3s);
  auto t0 = std::chrono::steady_clock::now();
  auto out = w.run([&](int r, c10d::ProcessGroup& pg) {
    if (r == 1) return;  // never calls save
    auto o = fast_save();
    o.timeout = 1s;
    ckpt::dist::save(make_state(r, 2, true), path("ck"), pg, o);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  ASSERT_FALSE(out[0].ok);
  EXPECT_NE(out[0].what.find("within 1000 ms"), std::string::npos) << out[0].what;
  EXPECT_FALSE(fs::exists(path("ck")));
}

namespace {

// Loads `ck` on one rank; the error it throws.
Outcome load_one(const std::string& ck) {
  World w(1);
  return w.run([&](int r, c10d::ProcessGroup& pg) {
    Value s = make_state(0, 1, false);
    ckpt::dist::load(s, ck, pg);
  })[0];
}

void rewrite(const std::string& path, const std::function<void(std::string&)>& edit) {
  std::string text = read_all(path);
  edit(text);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace

TEST_F(DistTest, HostileMetadataAndDamagedPiecesAreOneLineErrorsNamingTheFile) {
  const std::string ck = path("ck");
  {
    World w(1);
    save_all(w, ck);
  }
  const std::string meta_path = ck + "/metadata.json";
  const std::string good = read_all(meta_path);
  auto expect_error = [&](const char* what, const std::string& names) {
    Outcome o = load_one(ck);
    EXPECT_FALSE(o.ok) << what;
    EXPECT_EQ(o.kind, ErrorKind::kCorruption) << what << ": " << o.what;
    EXPECT_NE(o.what.find(names), std::string::npos) << what << ": " << o.what;
    EXPECT_EQ(o.what.find('\n'), std::string::npos) << what;
    std::ofstream(meta_path, std::ios::trunc) << good;
  };
  ASSERT_TRUE(load_one(ck).ok);

  rewrite(meta_path, [](std::string& t) { t = t.substr(0, t.size() / 2); });
  expect_error("truncated JSON", meta_path);

  rewrite(meta_path, [](std::string& t) {
    auto j = nlohmann::json::parse(t);
    for (auto& e : j["entries"])
      if (e["key"] == "model_state/emb") e["pieces"][0]["offsets"] = {3, 0};
    t = j.dump();
  });
  expect_error("offsets outside the global shape", meta_path);

  rewrite(meta_path, [](std::string& t) {
    auto j = nlohmann::json::parse(t);
    for (auto& e : j["entries"])
      if (e["key"] == "model_state/big") e["pieces"][0]["crc32"] = "0x12345678";
    t = j.dump();
  });
  expect_error("wrong CRC in the metadata", "rank-00000.pt");

  rewrite(meta_path, [](std::string& t) {
    auto j = nlohmann::json::parse(t);
    for (auto& e : j["entries"])
      if (e["key"] == "model_state/big") e["pieces"][0]["record"] = "rank-00000/data/999";
    t = j.dump();
  });
  expect_error("a record that is not there", "rank-00000.pt");

  rewrite(meta_path, [](std::string& t) {
    auto j = nlohmann::json::parse(t);
    j["files"][0]["file"] = "../../etc/passwd";
    t = j.dump();
  });
  expect_error("a file outside the directory", meta_path);

  rewrite(meta_path, [](std::string& t) {
    auto j = nlohmann::json::parse(t);
    for (auto& e : j["entries"])
      if (e["key"] == "model_state/big") e["pieces"][0]["nbytes"] = 1u << 30;
    t = j.dump();
  });
  expect_error("a byte count that does not fit the shape", meta_path);

  // A flipped byte inside a piece's record: the CRC-32 names the rank file.
  {
    auto j = nlohmann::json::parse(good);
    uint64_t off = 0;
    for (auto& e : j["entries"])
      if (e["key"] == "model_state/big") off = e["pieces"][0]["data_offset"].get<uint64_t>() + 17;
    std::fstream f(ck + "/rank-00000.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(off);
    char c;
    f.get(c);
    f.seekp(off);
    f.put(char(c ^ 0x40));
  }
  expect_error("a damaged record", "rank-00000.pt: key 'model_state/big'");
}

TEST_F(DistTest, ALoadThatFailsOnOneRankFailsOnEveryRankNamingIt) {
  World w(2);
  const std::string ck = path("ck");
  save_all(w, ck);
  auto out = w.run([&](int r, c10d::ProcessGroup& pg) {
    Value s = make_state(r, 2, false);
    if (r == 1) s.dict().set("not_saved", Value(at::zeros({2})));
    ckpt::dist::load(s, ck, pg);
  });
  ASSERT_FALSE(out[1].ok);
  EXPECT_EQ(out[1].kind, ErrorKind::kNotFound) << out[1].what;
  EXPECT_NE(out[1].what.find("'not_saved'"), std::string::npos) << out[1].what;
  ASSERT_FALSE(out[0].ok);
  EXPECT_NE(out[0].what.find("failed on rank(s) 1"), std::string::npos) << out[0].what;
}

namespace {

void expect_consolidated(const Value& v, int world) {
  EXPECT_TRUE(at::equal(v["model_state"]["emb"].to_tensor(), global_emb()));
  EXPECT_TRUE(at::equal(v["model_state"]["proj"].to_tensor(), global_proj()));
  EXPECT_TRUE(at::equal(v["model_state"]["big"].to_tensor(), at::arange(1000, at::kInt)));
  EXPECT_TRUE(at::equal(v["model_state"]["scalar"].to_tensor(), at::tensor(7.0)));
  EXPECT_EQ(v["step"].to_int(), 1234);
  ASSERT_TRUE(v["groups"].is_list());
  ASSERT_TRUE(v["groups"][0]["betas"].is_tuple());
  EXPECT_EQ(v["groups"][0]["params"][0].to_int(), 3);
  ASSERT_EQ(v["data_pos"].size(), size_t(world));
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(v["data_pos"][r].to_int(), 100 + r);
    EXPECT_TRUE(at::equal(v["rng"][r].to_tensor(), at::full({4}, r + 1, at::kLong)));
  }
}

}  // namespace

TEST_F(DistTest, ConsolidateJoinsShardsWithoutAProcessGroup) {
  const std::string ck = path("ck");
  {
    World w(3);
    save_all(w, ck);
  }
  EXPECT_TRUE(ckpt::dist::is_distributed_checkpoint(ck));
  EXPECT_FALSE(ckpt::dist::is_distributed_checkpoint(ck + "/rank-00000.pt"));
  expect_consolidated(ckpt::dist::consolidate(ck), 3);
  auto report = ckpt::dist::verify_distributed(ck);
  EXPECT_EQ(report.world_size, 3);
  EXPECT_EQ(report.pieces, 4u + 2 * 3 + 1);  // 4 replicated model tensors, 2 sharded on 3 ranks, betas[0]
}

#ifdef CKPT_CLI
TEST_F(DistTest, CliConsolidatesVerifiesAndInspectsADistributedCheckpoint) {
  const std::string ck = path("ck"), out = path("whole.pt"), log = path("log.txt");
  {
    World w(2);
    save_all(w, ck);
  }
  auto run = [&](const std::string& args) {
    const int rc = std::system((std::string(CKPT_CLI) + " " + args + " > " + log + " 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  ASSERT_EQ(run("consolidate " + ck + " " + out), 0) << read_all(log);
  expect_consolidated(ckpt::load(out), 2);
  EXPECT_EQ(run("verify " + ck), 0) << read_all(log);
  EXPECT_NE(read_all(log).find("distributed checkpoint of 2 ranks"), std::string::npos) << read_all(log);
  EXPECT_EQ(run("inspect " + ck), 0) << read_all(log);
  EXPECT_NE(read_all(log).find("emb"), std::string::npos) << read_all(log);
  // A flipped byte in rank 1's file: verify fails naming it.
  {
    auto j = read_json(ck + "/metadata.json");
    uint64_t off = 0;
    for (auto& e : j["entries"])
      for (auto& p : e.value("pieces", nlohmann::json::array()))
        if (p["rank"] == 1) off = p["data_offset"].get<uint64_t>();
    ASSERT_GT(off, 0u);
    std::fstream f(ck + "/rank-00001.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(off);
    char c;
    f.get(c);
    f.seekp(off);
    f.put(char(c ^ 1));
  }
  EXPECT_EQ(run("verify " + ck), 1) << read_all(log);
  EXPECT_NE(read_all(log).find("rank-00001.pt"), std::string::npos) << read_all(log);
  EXPECT_EQ(run("consolidate " + ck + " " + path("again.pt")), 1) << read_all(log);
  EXPECT_NE(read_all(log).find("rank-00001.pt"), std::string::npos) << read_all(log);
  EXPECT_FALSE(fs::exists(path("again.pt")));
}
#endif

// ---- real processes: init_from_env() as under torchrun, and a rank SIGKILLed mid-write ----
// The parent test starts this binary twice with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set,
// running only DistProcess.DISABLED_Worker (CKPT_DIST_TEST_DIR, CKPT_DIST_TEST_MODE).

TEST(DistProcess, DISABLED_Worker) {
  const char* dir = std::getenv("CKPT_DIST_TEST_DIR");
  const char* mode = std::getenv("CKPT_DIST_TEST_MODE");
  ASSERT_TRUE(dir && mode);
  ckpt::dist::InitOptions io;
  io.timeout = 20s;
  ckpt::dist::Group g = ckpt::dist::init_from_env(io);
  const std::string a = std::string(dir) + "/a", b = std::string(dir) + "/b";
  ckpt::dist::save(make_state(g.rank, g.world_size, true), a, *g.pg, fast_save());
  Value s = make_state(g.rank, g.world_size, false);
  ckpt::dist::load(s, a, *g.pg);
  expect_loaded(s, g.rank, g.world_size, true);
  if (std::string(mode) != "kill") return;
  ckpt::test::FaultEnv dying;
  dying.pause_after = 200;  // rank 1 dies in the middle of writing its file
  dying.on_pause = [] { ::kill(::getpid(), SIGKILL); };
  auto o = fast_save();
  if (g.rank == 1) o.env = &dying;
  try {
    ckpt::dist::save(make_state(g.rank, g.world_size, true), b, *g.pg, o);
    ADD_FAILURE() << "rank " << g.rank << ": the save went through";
  } catch (const ckpt::Error& e) {
    std::ofstream(std::string(dir) + "/error-" + std::to_string(g.rank) + ".txt") << e.what();
  }
}

namespace {

// Starts `world` ranks of DistProcess.DISABLED_Worker in `mode`; their wait statuses.
std::vector<int> run_workers(int world, const std::string& dir, const std::string& mode) {
  return run_rank_processes(world, "DistProcess.DISABLED_Worker",
                            {{"CKPT_DIST_TEST_DIR", dir}, {"CKPT_DIST_TEST_MODE", mode}});
}

}  // namespace

TEST_F(DistTest, ProcessesFromTheEnvironmentSaveAndLoad) {
  auto st = run_workers(2, dir_.string(), "save");
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(WIFEXITED(st[r]) && WEXITSTATUS(st[r]) == 0) << "rank " << r << ": " << st[r];
  expect_consolidated(ckpt::dist::consolidate(path("a")), 2);
}

TEST_F(DistTest, ARankKilledMidWriteLeavesNothingPublishedAndTheOtherFailsAtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  auto st = run_workers(2, dir_.string(), "kill");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 40s);
  EXPECT_TRUE(WIFSIGNALED(st[1]) && WTERMSIG(st[1]) == SIGKILL) << st[1];
  EXPECT_TRUE(WIFEXITED(st[0]) && WEXITSTATUS(st[0]) == 0) << st[0];
  const std::string err = read_all(path("error-0.txt"));
  EXPECT_NE(err.find("ckpt::dist"), std::string::npos) << err;
  std::printf("rank 0 got: %s\n", err.c_str());
  EXPECT_FALSE(fs::exists(path("b")));
  expect_consolidated(ckpt::dist::consolidate(path("a")), 2);  // the previous one, intact
  // The next save removes what the interrupted one left.
  World w(1);
  save_all(w, path("c"));
  for (const auto& n : names_in(dir_)) EXPECT_EQ(n.find(".tmp-dist"), std::string::npos) << n;
}

TEST_F(DistTest, ATemplateWithAnEmptyContainerGetsTheSavedSubtree) {
  // An optimizer without state yet, a list that grew: the template holds {} or [] where the
  // checkpoint has a container of tensors and values; load puts the subtree together.
  World w(2);
  const std::string ck = path("grown");
  auto out = w.run([&](int r, c10d::ProcessGroup& pg) {
    Value state = Value::new_dict();
    Value opt = Value::new_dict();
    Value per_param = Value::new_dict();
    per_param.dict().set("exp_avg", Value(torch::arange(6, torch::kFloat)));
    per_param.dict().set("step", Value(static_cast<long long>(5)));
    opt.dict().set(Value(static_cast<long long>(0)), per_param);
    state.dict().set("state", opt);
    state.dict().set("history", Value::list({Value(0.5), Value(0.25)}));
    state.dict().set("rng", ckpt::dist::per_rank(Value(static_cast<long long>(10 + r))));
    ckpt::dist::save(state, ck, pg, fast_save());
  });
  for (const auto& o : out) ASSERT_TRUE(o.ok) << o.what;
  out = w.run([&](int r, c10d::ProcessGroup& pg) {
    Value tmpl = Value::new_dict();
    tmpl.dict().set("state", Value::new_dict());
    tmpl.dict().set("history", Value::list());
    tmpl.dict().set("rng", ckpt::dist::per_rank(Value(static_cast<long long>(0))));
    ckpt::dist::LoadOptions lo;
    lo.timeout = 20s;
    ckpt::dist::load(tmpl, ck, pg, lo);
    const Value& p0 = tmpl.at("state").dict().items().at(0).second;
    EXPECT_TRUE(torch::equal(p0.at("exp_avg").to_tensor(), torch::arange(6, torch::kFloat)));
    EXPECT_EQ(p0.at("step").to_int(), 5);
    ASSERT_EQ(tmpl.at("history").size(), 2u);
    EXPECT_EQ(tmpl.at("history").items()[1].to_double(), 0.25);
    EXPECT_EQ(tmpl.at("rng").to_int(), 10 + r);
  });
  for (const auto& o : out) EXPECT_TRUE(o.ok) << o.what;
}
