#include "format/archive.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <streambuf>

#include "fault_env.h"
#include "format/zip.h"
#include "io/posix_calls.h"
#include "test_util.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::TempDir;

std::shared_ptr<StorageData> filled_storage(DType dtype, size_t numel, uint8_t seed) {
  auto s = make_storage(dtype, numel * element_size(dtype));
  for (size_t i = 0; i < s->nbytes(); ++i) s->data()[i] = std::byte(static_cast<uint8_t>(seed + i * 7));
  return s;
}

Value tensor(std::shared_ptr<StorageData> s, std::vector<int64_t> sizes, std::vector<int64_t> strides,
             int64_t offset = 0) {
  TensorRef t;
  t.dtype = s->dtype();
  t.storage = std::move(s);
  t.sizes = std::move(sizes);
  t.strides = std::move(strides);
  t.storage_offset = offset;
  return Value(std::move(t));
}

// A checkpoint like the seeds': model_state (OrderedDict), optimizer_state, epoch; plus views.
Value sample_checkpoint(size_t big = 1000) {
  Value model = Value::ordered_dict();
  model.dict().set("fc.weight", tensor(filled_storage(DType::kFloat32, 6, 1), {2, 3}, {3, 1}));
  model.dict().set("fc.bias", tensor(filled_storage(DType::kFloat32, 2, 2), {2}, {1}));
  model.dict().set("bn.num_batches_tracked", tensor(filled_storage(DType::kInt64, 1, 3), {}, {}));
  Value opt = Value::new_dict();
  Value state = Value::new_dict();
  Value s0 = Value::new_dict();
  s0.dict().set("step", tensor(filled_storage(DType::kFloat32, 1, 4), {}, {}));
  s0.dict().set("exp_avg", tensor(filled_storage(DType::kFloat32, big, 5), {int64_t(big)}, {1}));
  state.dict().set(0, s0);
  opt.dict().set("state", state);
  Value group = Value::new_dict();
  group.dict().set("lr", 0.001);
  group.dict().set("betas", Value::tuple({0.9, 0.999}));
  group.dict().set("params", Value::list({0, 1}));
  opt.dict().set("param_groups", Value::list({group}));
  auto base = filled_storage(DType::kFloat64, 10, 6);
  Value root = Value::new_dict();
  root.dict().set("model_state", model);
  root.dict().set("optimizer_state", opt);
  root.dict().set("epoch", 3);
  root.dict().set("view_a", tensor(base, {3}, {1}, 2));
  root.dict().set("view_t", tensor(base, {5, 2}, {1, 5}));
  root.dict().set("empty", tensor(filled_storage(DType::kBFloat16, 0, 0), {3, 0}, {1, 1}));
  return root;
}

TEST(Archive, RoundTripEagerAndMapped) {
  TempDir dir;
  Value v = sample_checkpoint();
  save(v, dir.file("ckpt.pt"));
  for (bool mmap : {false, true}) {
    LoadOptions o;
    o.mmap = mmap;
    Value back = load(dir.file("ckpt.pt"), o);
    std::string why;
    EXPECT_TRUE(test::deep_equal(v, back, &why)) << why << (mmap ? " (mmap)" : " (eager)");
    // Views of one storage still share it.
    EXPECT_EQ(back["view_a"].tensor().storage.get(), back["view_t"].tensor().storage.get());
  }
}

// An upload announces the archive's size before its first byte (one streamed PUT to object
// storage): zip::archive_size must be exact for every shape of checkpoint.
class SizeRecordingEnv : public io::EnvWrapper {
 public:
  using io::EnvWrapper::EnvWrapper;
  std::vector<uint64_t> announced;
  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    return std::make_unique<File>(target()->new_writable_file(path, direct), this);
  }

 private:
  struct File : io::WritableFileWrapper {
    File(std::unique_ptr<io::WritableFile> f, SizeRecordingEnv* env) : WritableFileWrapper(std::move(f)), env(env) {}
    void expect_size(uint64_t n) override { env->announced.push_back(n); }
    SizeRecordingEnv* env;
  };
};

TEST(Archive, AnnouncedSizeIsExact) {
  TempDir dir;
  SizeRecordingEnv env(io::Env::Default());
  Value many = Value::new_dict();
  for (int i = 0; i < 300; ++i)  // offsets cross every alignment residue; names of 1 to 3 digits
    many.dict().set(i, tensor(filled_storage(DType::kUInt8, static_cast<size_t>(i * 13 % 97), 1), {i * 13 % 97}, {1}));
  int n = 0;
  for (const Value& v : {sample_checkpoint(), sample_checkpoint(1 << 20), many, Value(3)}) {
    const std::string path = dir.file("c" + std::to_string(n++) + ".pt");
    SaveOptions o;
    o.env = &env;
    save(v, path, o);
    ASSERT_EQ(env.announced.size(), static_cast<size_t>(n));
    EXPECT_EQ(env.announced.back(), std::filesystem::file_size(path)) << path;
  }
}

TEST(Archive, LayoutMatchesPyTorch) {
  TempDir dir;
  save(sample_checkpoint(), dir.file("my.model.pt"));
  std::string bytes = test::read_file(dir.file("my.model.pt"));
  auto entries = zip::read_directory(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  ASSERT_GE(entries.size(), 4u);
  EXPECT_EQ(entries.front().name, "my.model/data.pkl");
  EXPECT_EQ(entries[1].name, "my.model/byteorder");
  EXPECT_EQ(entries.back().name, "my.model/version");
  for (const auto& e : entries) {
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    EXPECT_EQ(e.method, 0);
  }
  // The storages are numbered in the order the pickle first uses them, one record each.
  EXPECT_EQ(entries[2].name, "my.model/data/0");
  EXPECT_EQ(entries[2].size, 24u);  // fc.weight: 6 float32
  size_t records = 0;
  for (const auto& e : entries) records += e.name.find("/data/") != std::string::npos;
  EXPECT_EQ(records, 7u);  // views share one record
}

TEST(Archive, VerifyChecksEveryRecord) {
  TempDir dir;
  save(sample_checkpoint(), dir.file("c.pt"));
  VerifyReport r = verify(dir.file("c.pt"));
  EXPECT_EQ(r.tensors, 8u);
  EXPECT_EQ(r.storages, 7u);
  for (const auto& rec : r.records) EXPECT_TRUE(rec.crc_checked) << rec.name;
}

std::string saved_bytes(TempDir& dir) {
  save(sample_checkpoint(), dir.file("c.pt"));
  return test::read_file(dir.file("c.pt"));
}

const zip::Entry& entry(const std::vector<zip::Entry>& es, const std::string& suffix) {
  for (const auto& e : es)
    if (e.name.size() >= suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return e;
  throw std::runtime_error("no entry " + suffix);
}

TEST(Archive, FlippedBitInTensorDataIsCaught) {
  TempDir dir;
  std::string bytes = saved_bytes(dir);
  auto es = zip::read_directory(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  const auto& e = entry(es, "/data/4");  // exp_avg, 4000 bytes
  bytes[e.data_offset + 1717] ^= 0x04;
  test::write_file(dir.file("bad.pt"), bytes);
  for (bool mmap : {false, true}) {
    LoadOptions o;
    o.mmap = mmap;
    expect_error([&] { load(dir.file("bad.pt"), o); }, ErrorKind::kCorruption, "record 'c/data/4': CRC-32 mismatch");
  }
  expect_error([&] { verify(dir.file("bad.pt")); }, ErrorKind::kCorruption, "bad.pt: record 'c/data/4'");
  // The option that skips the check loads the damaged bytes.
  LoadOptions skip;
  skip.verify_checksums = false;
  EXPECT_NO_THROW(load(dir.file("bad.pt"), skip));
}

TEST(Archive, FlippedBitInPickleIsCaught) {
  TempDir dir;
  std::string bytes = saved_bytes(dir);
  auto es = zip::read_directory(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  bytes[entry(es, "/data.pkl").data_offset + 40] ^= 0x01;
  test::write_file(dir.file("bad.pt"), bytes);
  expect_error([&] { load(dir.file("bad.pt")); }, ErrorKind::kCorruption, "record 'c/data.pkl': CRC-32 mismatch");
}

TEST(Archive, EveryTruncationIsRefused) {
  TempDir dir;
  std::string bytes = saved_bytes(dir);
  for (size_t n = 0; n < bytes.size(); n += (n < 200 || bytes.size() - n < 200) ? 1 : 61) {
    auto f = io::memory_file(bytes.substr(0, n), "cut.pt");
    EXPECT_THROW(format::read_archive(f, LoadOptions{}), Error) << "truncated to " << n << " bytes";
  }
  test::write_file(dir.file("empty.pt"), "");
  expect_error([&] { load(dir.file("empty.pt")); }, ErrorKind::kCorruption, "empty.pt: empty file");
  test::write_file(dir.file("text.pt"), "hello, world");
  expect_error([&] { load(dir.file("text.pt")); }, ErrorKind::kCorruption, "not a PyTorch checkpoint");
  expect_error([&] { load(dir.file("missing.pt")); }, ErrorKind::kNotFound, "missing.pt: cannot open file");
}

TEST(Archive, EverySingleByteFlipFailsCleanlyOrLoads) {
  TempDir dir;
  std::string bytes = saved_bytes(dir);
  Value original = sample_checkpoint();
  size_t refused = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string b = bytes;
    b[i] ^= 0x20;
    try {
      Value v = format::read_archive(io::memory_file(b, "flip.pt"), LoadOptions{});
      // A flip that loads must have hit bytes no reader uses (padding, unused header fields),
      // so the content is unchanged.
      std::string why;
      EXPECT_TRUE(test::deep_equal(original, v, &why)) << "byte " << i << " changed content silently: " << why;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, bytes.size() / 4);
}

TEST(Archive, ShapeLargerThanStorageIsRefused) {
  TempDir dir;
  Value v = Value::new_dict();
  v.dict().set("t", tensor(filled_storage(DType::kFloat32, 4, 0), {5}, {1}));
  expect_error([&] { save(v, dir.file("x.pt")); }, ErrorKind::kCorruption, "needs 5 elements but its storage has 4");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.pt")));
}

// --- crash safety ------------------------------------------------------------------------------

size_t files_in(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(Archive, NoMemoryForTheStoragesIsAnErrorNamingTheFile) {
  TempDir dir;
  save(sample_checkpoint(1 << 20), dir.file("c.pt"));  // a 4 MiB record (its own arena) and small ones
  test::OpFaultEnv env;
  env.fail_kind = test::OpFaultEnv::kAlloc;
  env.error = ENOMEM;
  LoadOptions o;
  o.env = &env;
  for (int64_t n : {0, 1}) {  // the first arena, and a later one
    env.fail_at = env.kind_calls[test::OpFaultEnv::kAlloc] + n;
    try {
      load(dir.file("c.pt"), o);
      ADD_FAILURE() << "allocation " << n << " failed but the load did not";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kIO) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind(dir.file("c.pt") + ": ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("storages: allocate failed: Cannot allocate memory"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_GE(env.kind_calls[test::OpFaultEnv::kAlloc], 2);  // loads take their memory through the Env
  EXPECT_NO_THROW(load(dir.file("c.pt"), o));
}

// pwrite/pread/read that do as little as POSIX allows: interrupted every third call, and short
// the rest of the time (by whole blocks on O_DIRECT descriptors, as devices are).
struct StingyCalls {
  io::PosixCalls saved = io::posix_calls();
  static inline std::atomic<int> calls{0};
  static size_t stingy(int fd, size_t n) {
    if (fcntl(fd, F_GETFL) & O_DIRECT) return n > 4096 ? n / 2 / 4096 * 4096 : n;
    return std::min<size_t>(n, 777);
  }
  static bool interrupt() {
    if (calls++ % 3 != 0) return false;
    errno = EINTR;
    return true;
  }
  StingyCalls() {
    auto& c = io::posix_calls();
    c.pwrite = [](int fd, const void* b, size_t n, off_t o) -> ssize_t {
      return interrupt() ? -1 : ::pwrite(fd, b, stingy(fd, n), o);
    };
    c.pread = [](int fd, void* b, size_t n, off_t o) -> ssize_t {
      return interrupt() ? -1 : ::pread(fd, b, stingy(fd, n), o);
    };
    c.read = [](int fd, void* b, size_t n) -> ssize_t {
      return interrupt() ? -1 : ::read(fd, b, std::min<size_t>(n, 5));
    };
  }
  ~StingyCalls() { io::posix_calls() = saved; }
};

TEST(Archive, ShortAndInterruptedReadsAndWritesChangeNothing) {
  TempDir plain, dir;
  Value v = sample_checkpoint(300000);
  save(v, plain.file("c.pt"));
  {
    StingyCalls stingy;
    save(v, dir.file("c.pt"));
    for (bool mmap : {false, true}) {
      LoadOptions o;
      o.mmap = mmap;
      std::string why;
      EXPECT_TRUE(test::deep_equal(v, load(dir.file("c.pt"), o), &why)) << why;
    }
    EXPECT_NO_THROW(verify(dir.file("c.pt")));
    EXPECT_TRUE(io::Env::Default()->read_file(plain.file("c.pt")) == test::read_file(plain.file("c.pt")));
    EXPECT_GT(StingyCalls::calls.load(), 100);
  }
  EXPECT_TRUE(test::read_file(dir.file("c.pt")) == test::read_file(plain.file("c.pt"))) << "the bytes differ";
}

TEST(Archive, AWriteThatTakesNoBytesFailsInsteadOfSpinning) {
  TempDir dir;
  save(sample_checkpoint(10), dir.file("c.pt"));
  std::string old = test::read_file(dir.file("c.pt"));
  io::PosixCalls saved = io::posix_calls();
  io::posix_calls().pwrite = [](int, const void*, size_t, off_t) -> ssize_t { return 0; };
  expect_error([&] { save(sample_checkpoint(), dir.file("c.pt")); }, ErrorKind::kIO, "the device took no bytes");
  io::posix_calls() = saved;
  EXPECT_EQ(test::read_file(dir.file("c.pt")), old);
  EXPECT_EQ(files_in(dir.path()), 1u);
}

TEST(Archive, FullDiskLeavesTheOldFileIntact) {
  TempDir dir;
  save(sample_checkpoint(10), dir.file("c.pt"));
  std::string old = test::read_file(dir.file("c.pt"));
  for (int64_t limit : {0, 10, 100, 3000}) {
    test::FaultEnv env;
    env.fail_write_after = limit;
    expect_error([&] { format::write_archive(&env, sample_checkpoint(), dir.file("c.pt"), SaveOptions{}); },
                 ErrorKind::kIO, "No space left on device");
    EXPECT_EQ(test::read_file(dir.file("c.pt")), old) << "limit " << limit;
    EXPECT_EQ(files_in(dir.path()), 1u) << "temp file left behind";
  }
}

TEST(Archive, FailedSyncOrRenameLeavesTheOldFileIntact) {
  TempDir dir;
  save(sample_checkpoint(10), dir.file("c.pt"));
  std::string old = test::read_file(dir.file("c.pt"));
  {
    test::FaultEnv env;
    env.fail_sync = true;
    expect_error([&] { format::write_archive(&env, sample_checkpoint(), dir.file("c.pt"), SaveOptions{}); },
                 ErrorKind::kIO, "fsync failed");
  }
  {
    test::FaultEnv env;
    env.fail_rename = true;
    expect_error([&] { format::write_archive(&env, sample_checkpoint(), dir.file("c.pt"), SaveOptions{}); },
                 ErrorKind::kIO, "rename failed");
  }
  EXPECT_EQ(test::read_file(dir.file("c.pt")), old);
  EXPECT_EQ(files_in(dir.path()), 1u);
  {
    // The rename happened but may not survive a crash: the caller hears of it, and the name
    // holds a complete file either way.
    test::FaultEnv env;
    env.fail_sync_dir = true;
    expect_error([&] { format::write_archive(&env, sample_checkpoint(), dir.file("c.pt"), SaveOptions{}); },
                 ErrorKind::kIO, "fsync of directory failed");
    EXPECT_EQ(env.renames, 1);
  }
  EXPECT_NO_THROW(verify(dir.file("c.pt")));
  EXPECT_EQ(files_in(dir.path()), 1u);
}

TEST(Archive, KilledWriterNeverLeavesAPartialFileUnderTheFinalName) {
  TempDir dir;
  save(sample_checkpoint(10), dir.file("c.pt"));
  std::string old = test::read_file(dir.file("c.pt"));
  for (int64_t at : {1, 5000, 200000}) {
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
      test::FaultEnv env;
      env.pause_after = at;
      env.on_pause = [&] {
        char c = 1;
        (void)!write(ready[1], &c, 1);
        pause();  // killed here, mid-write
      };
      try {
        format::write_archive(&env, sample_checkpoint(100000), dir.file("c.pt"), SaveOptions{});
      } catch (...) {
      }
      _exit(0);
    }
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(ready[0]);
    close(ready[1]);
    EXPECT_EQ(test::read_file(dir.file("c.pt")), old) << "killed after " << at << " bytes";
    EXPECT_NO_THROW(load(dir.file("c.pt")));
  }
  // What a killed writer leaves is only temp files of its own name, one per kill, which the
  // parser that cleanup trusts (the run manager's next start) recognises as c.pt's.
  size_t temps = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    std::string name = e.path().filename().string();
    if (name == "c.pt") continue;
    EXPECT_TRUE(io::is_temp_name_for(name, "c.pt")) << "unexpected leftover " << name;
    ++temps;
  }
  EXPECT_EQ(temps, 3u);
}

// Records whether the files it creates were granted O_DIRECT.
class DirectRecordingEnv : public io::EnvWrapper {
 public:
  DirectRecordingEnv() : EnvWrapper(io::Env::Default()) {}
  size_t alignment = 0;
  std::unique_ptr<io::WritableFile> new_writable_file(const std::string& path, bool direct) override {
    auto f = target()->new_writable_file(path, direct);
    if (direct) alignment = f->direct_alignment();
    return f;
  }
};

TEST(Archive, DirectIoWritesTheSameBytesAsBufferedIo) {
  // Under the working directory (the build tree, on disk): /tmp may be a tmpfs, which has no
  // O_DIRECT and would make this test compare buffered writes with themselves.
  TempDir dir(std::filesystem::current_path().string());
  // 40 MiB of tensors: large enough for O_DIRECT, with a tail that is not block-aligned.
  Value v = sample_checkpoint(10'000'001);
  DirectRecordingEnv recording;
  format::write_archive(&recording, v, dir.file("c.pt"), SaveOptions{});  // durable: O_DIRECT
  ASSERT_GT(recording.alignment, 0u) << "O_DIRECT was not granted in " << dir.path()
                                     << ": run the tests on a disk filesystem (ext4, xfs)";
  std::string direct = test::read_file(dir.file("c.pt"));
  SaveOptions scratch;
  scratch.durable = false;  // page cache
  std::filesystem::create_directory(dir.file("b"));
  save(v, dir.file("b/c.pt"), scratch);
  EXPECT_EQ(direct, test::read_file(dir.file("b/c.pt")));
  std::string why;
  EXPECT_TRUE(test::deep_equal(v, load(dir.file("c.pt")), &why)) << why;
  // A failure in the middle of the direct write still leaves the old file intact.
  test::FaultEnv env;
  env.fail_write_after = 20 << 20;
  expect_error([&] { format::write_archive(&env, sample_checkpoint(10'000'002), dir.file("c.pt"), SaveOptions{}); },
               ErrorKind::kIO, "No space left on device");
  EXPECT_EQ(test::read_file(dir.file("c.pt")), direct);
}

// An output stream that cannot seek (a pipe, a socket): save() must not need to.
class AppendOnlyBuf : public std::streambuf {
 public:
  std::string data;

 protected:
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) data.push_back(static_cast<char>(c));
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    data.append(s, static_cast<size_t>(n));
    return n;
  }
  pos_type seekoff(off_type, std::ios_base::seekdir, std::ios_base::openmode) override { return pos_type(-1); }
};

TEST(Archive, BytesAndStreamsHoldWhatAFileHolds) {
  TempDir dir;
  auto s = filled_storage(DType::kFloat32, 1000, 7);
  Value v = Value::new_dict();
  v.dict().set("w", tensor(s, {10, 100}, {100, 1}));
  v.dict().set("view", tensor(s, {100}, {1}, 200));
  v.dict().set("epoch", 3);
  save(v, dir.file("archive.pt"));
  const std::string bytes = save_to_bytes(v);
  EXPECT_EQ(bytes, test::read_file(dir.file("archive.pt")));  // the same bytes a file of that name gets
  std::string why;
  EXPECT_TRUE(test::deep_equal(load_from_bytes(bytes), v, &why)) << why;

  AppendOnlyBuf buf;
  std::ostream out(&buf);
  save(v, out);
  EXPECT_EQ(buf.data, bytes);
  std::istringstream in(buf.data);
  Value back = load(in);
  EXPECT_TRUE(test::deep_equal(back, v, &why)) << why;
  // Shared storage survives: the view still views the same storage.
  EXPECT_EQ(back["w"].tensor().storage.get(), back["view"].tensor().storage.get());

  std::string damaged = bytes;
  damaged[damaged.size() / 2] ^= 1;
  std::istringstream bad(damaged);
  expect_error([&] { load(bad); }, ErrorKind::kCorruption, "<stream>: record");
}

TEST(Archive, PrefixFollowsPyTorch) {
  EXPECT_EQ(format::archive_prefix("/a/b/ckpt.pt"), "ckpt");
  EXPECT_EQ(format::archive_prefix("m.tar.gz"), "m.tar");
  EXPECT_EQ(format::archive_prefix("noext"), "noext");
  EXPECT_EQ(format::archive_prefix("dir/.pt"), ".pt");
  EXPECT_EQ(format::archive_prefix("sp ace.pt"), "archive");
}

TEST(Value, MissingKeyNamesTheClosestOne) {
  Value v = Value::new_dict();
  v.dict().set("model_state", 1);
  v.dict().set("optimizer_state", 2);
  expect_error([&] { (void)v["optimizer"]; }, ErrorKind::kNotFound, "did you mean 'optimizer_state'?");
  expect_error([&] { (void)v["modle_state"]; }, ErrorKind::kNotFound, "did you mean 'model_state'?");
  expect_error([&] { (void)v["zzzzzzzzzzzzzz"]; }, ErrorKind::kNotFound, "keys are 'model_state', 'optimizer_state'");
  expect_error([&] { (void)v["epoch"].to_int(); }, ErrorKind::kNotFound, "key 'epoch' not found");
  expect_error([&] { v["model_state"].to_string(); }, ErrorKind::kMismatch, "expected a str but the value is int");
}

TEST(Value, DictKeepsInsertionOrderAndReplacesInPlace) {
  Dict d;
  for (int i = 0; i < 100; ++i) d.set(std::to_string(i), i);
  d.set("5", -5);
  EXPECT_EQ(d.size(), 100u);
  EXPECT_EQ(d.items()[5].second.to_int(), -5);
  EXPECT_EQ(d.find(Value(int64_t{3})), nullptr);
  d.set(Value(true), 1);
  EXPECT_EQ(d.find(Value(1))->to_int(), 1);  // Python: True == 1
  EXPECT_TRUE(d.erase("0"));
  EXPECT_EQ(d.items()[0].first.to_string(), "1");
  EXPECT_EQ(d.find("99")->to_int(), 99);
}

}  // namespace
}  // namespace ckpt
