// Hostile files, asserted one by one: each is refused with a one-line ckpt::Error of the right kind
// that names the file and the problem, nothing in it runs, and the refusal comes within bounded
// time and memory. Every file is built here, byte by byte, so each case says exactly what it
// attacks (the fuzzers explore around them; the real PyTorch files are in the interop tests).
//
// Bounds: each load runs in a child process with an alarm (kSeconds) and, outside sanitizer
// builds, an address-space limit of kMemoryMiB above what the process already has; a hang, a
// crash, an allocation past the limit or any exception but ckpt::Error fails the case.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>

#include "ckpt/serialize.h"
#include "format/archive.h"
#include "format/zip.h"
#include "test_util.h"
#include "util/bytes.h"
#include "util/crc32.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CKPT_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CKPT_UNDER_SANITIZER 1
#endif
#endif

namespace ckpt {
namespace {

using test::TempDir;

constexpr unsigned kSeconds = 20;   // generous: a refusal takes milliseconds; this catches hangs
constexpr size_t kMemoryMiB = 512;  // every file here is under 1 MiB

// --- building files -------------------------------------------------------------------------------

std::string le16(uint16_t v) {
  return {char(v), char(v >> 8)};
}
std::string le32(uint32_t v) {
  return le16(uint16_t(v)) + le16(uint16_t(v >> 16));
}
std::string le64(uint64_t v) {
  return le32(uint32_t(v)) + le32(uint32_t(v >> 32));
}

// Raw deflate (zip method 8) of `data`.
std::string deflate_raw(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, data.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

struct ZipEntry {
  std::string name, data;
  bool deflate = false;
};

// A plain zip (APPNOTE 4.3): local headers, stored or deflated data, the central directory, the
// end record. `patch` may change the bytes before they are returned; the offsets of each local
// header and central entry let it aim.
struct Zip {
  std::string bytes;
  std::vector<size_t> local, central;
  size_t eocd = 0;
};

Zip build_zip(const std::vector<ZipEntry>& entries) {
  Zip z;
  std::string cd;
  for (const auto& e : entries) {
    std::string payload = e.data;
    uint16_t method = 0;
    if (e.deflate) {
      payload = deflate_raw(e.data);
      method = 8;
    }
    uint32_t crc = crc32_update(0, e.data.data(), e.data.size());
    z.local.push_back(z.bytes.size());
    std::string common = le16(20) + le16(0) + le16(method) + le16(0) + le16(0) + le32(crc) +
                         le32(uint32_t(payload.size())) + le32(uint32_t(e.data.size())) + le16(uint16_t(e.name.size()));
    z.central.push_back(cd.size());
    cd += le32(0x02014b50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) +
          le32(uint32_t(z.local.back())) + e.name;
    z.bytes += le32(0x04034b50) + common + le16(0) + e.name + payload;
  }
  size_t cd_offset = z.bytes.size();
  for (auto& c : z.central) c += cd_offset;
  z.bytes += cd;
  z.eocd = z.bytes.size();
  z.bytes += le32(0x06054b50) + le16(0) + le16(0) + le16(uint16_t(entries.size())) + le16(uint16_t(entries.size())) +
             le32(uint32_t(cd.size())) + le32(uint32_t(cd_offset)) + le16(0);
  return z;
}

// Protocol-2 pickle opcodes, spelled out.
struct Pickle {
  std::string s = "\x80\x02";
  Pickle& op(const std::string& o) { return s += o, *this; }
  Pickle& global(const std::string& module, const std::string& name) { return op("c" + module + "\n" + name + "\n"); }
  Pickle& str(const std::string& v) { return op("X" + le32(uint32_t(v.size())) + v); }
  Pickle& i32(int32_t v) { return op("J" + le32(uint32_t(v))); }
  Pickle& i64(int64_t v) { return op("\x8a\x08" + le64(uint64_t(v))); }
  Pickle& mark() { return op("("); }
  Pickle& tuple() { return op("t"); }
  Pickle& reduce() { return op("R"); }
  Pickle& ints(const std::vector<int64_t>& v) {
    mark();
    for (int64_t x : v) i64(x);
    return tuple();
  }
  // ('storage', torch.<cls>, key, 'cpu', numel) as a persistent id.
  Pickle& storage(const std::string& cls, const std::string& key, int64_t numel) {
    mark().str("storage").global("torch", cls).str(key).str("cpu").i64(numel).tuple();
    return op("Q");
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, sizes, strides, False, OrderedDict())
  Pickle& tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& sizes,
                 const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", key, numel).i64(offset);
    ints(sizes).ints(strides).op("\x89").global("collections", "OrderedDict").op(")").reduce().tuple();
    return reduce();
  }
  std::string done() const { return s + "."; }
};

// A torch.save archive around `pickle`, with the given data records.
std::string archive(const std::string& pickle, const std::vector<ZipEntry>& data = {}) {
  std::vector<ZipEntry> entries = {{"archive/data.pkl", pickle}};
  for (const auto& d : data) entries.push_back({"archive/data/" + d.name, d.data, d.deflate});
  entries.push_back({"archive/version", "3\n"});
  return build_zip(entries).bytes;
}

std::string floats(size_t n) {
  return std::string(n * 4, '\x01');
}

// A one-tensor checkpoint {'w': tensor} that loads, as the base of the record-level attacks.
std::string good_archive() {
  return archive(Pickle().op("}").str("w").tensor("0", 4, 0, {4}, {1}).op("s").done(), {{"0", floats(4)}});
}

// --- the bounded runner ---------------------------------------------------------------------------

size_t address_space_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  return pages * size_t(::sysconf(_SC_PAGESIZE));
}

// How many hostile files were refused within bounds, printed at the end for RELIABILITY.md.
struct RefusedCount {
  int n = 0;
  ~RefusedCount() {
    if (n) std::printf("[ hostile ] %d hostile files refused, each by load (eager and mmap) and verify\n", n);
  }
} refused_count;

// Loads (and verifies) `bytes` from a file in a child process; expects a ckpt::Error of `kind`
// whose one-line message names the file and contains `needle`.
void expect_refused(const std::string& name, const std::string& bytes, ErrorKind kind, const std::string& needle) {
  SCOPED_TRACE(name);
  TempDir dir;
  const std::string path = dir.file(name + ".pt");
  test::write_file(path, bytes);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(out[0]);
#ifndef CKPT_UNDER_SANITIZER
    rlimit as{address_space_bytes() + (kMemoryMiB << 20), RLIM_INFINITY};
    ::setrlimit(RLIMIT_AS, &as);
#endif
    ::alarm(kSeconds);
    std::string report;
    int code = 0;
    for (bool mmap : {false, true}) {
      try {
        LoadOptions o;
        o.mmap = mmap;
        load(path, o);
        report = "loaded without an error", code = 1;
      } catch (const Error& e) {
        std::string what = e.what();
        if (e.kind() != kind)
          report = std::string("kind ") + to_string(e.kind()) + ": " + what, code = 2;
        else if (what.find(path) == std::string::npos)
          report = "names no file: " + what, code = 3;
        else if (what.find(needle) == std::string::npos)
          report = "unexpected message: " + what, code = 4;
        else if (what.find('\n') != std::string::npos)
          report = "multi-line: " + what, code = 5;
        else if (!test::unprintable_at(what).empty())
          report = "not printable (" + test::unprintable_at(what) + "): " + what, code = 10;
      } catch (const std::bad_alloc&) {
        report = "ran out of its " + std::to_string(kMemoryMiB) + " MiB", code = 6;
      } catch (const std::exception& e) {
        report = std::string("not a ckpt::Error: ") + e.what(), code = 7;
      }
      if (code) break;
      try {
        verify(path);
        report = "verify() accepted it", code = 8;
      } catch (const Error&) {
      } catch (const std::exception& e) {
        report = std::string("verify(): not a ckpt::Error: ") + e.what(), code = 9;
      }
      if (code) break;
    }
    (void)!::write(out[1], report.data(), report.size());
    ::_exit(code);
  }
  ::close(out[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) report.append(buf, size_t(n));
  ::close(out[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status)) {
    ADD_FAILURE() << (WTERMSIG(status) == SIGALRM ? "took longer than " + std::to_string(kSeconds) + " s"
                                                  : "died of signal " + std::to_string(WTERMSIG(status)));
    return;
  }
  EXPECT_EQ(WEXITSTATUS(status), 0) << report;
  if (WEXITSTATUS(status) == 0) ++refused_count.n;
}

// --- code that would run --------------------------------------------------------------------------

TEST(Hostile, PicklesThatWouldRunCodeAreRefusedAndRunNothing) {
  TempDir dir;
  const std::string marker = dir.file("ran");
  struct Case {
    const char* module;
    const char* name;
  } cases[] = {{"os", "system"},           {"posix", "system"},
               {"builtins", "eval"},       {"builtins", "exec"},
               {"subprocess", "Popen"},    {"builtins", "getattr"},
               {"builtins", "__import__"}, {"torch", "load"},
               {"pickle", "loads"},        {"torch.serialization", "load"}};
  for (const auto& c : cases) {
    std::string pkl = Pickle().global(c.module, c.name).mark().str("touch " + marker).tuple().reduce().done();
    expect_refused(std::string("run-") + c.name, archive(pkl), ErrorKind::kUnsafe,
                   std::string("'") + c.module + "." + c.name + "'");
  }
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(Hostile, AllowlistedNamesUsedInUnexpectedWaysAreRefused) {
  // The rebuild function handed a string where its storage belongs.
  expect_refused("rebuild-str",
                 archive(Pickle()
                             .global("torch._utils", "_rebuild_tensor_v2")
                             .mark()
                             .str("x")
                             .i64(0)
                             .ints({1})
                             .ints({1})
                             .op("\x89")
                             .op("}")
                             .tuple()
                             .reduce()
                             .done()),
                 ErrorKind::kCorruption, "_rebuild_tensor_v2");
  // ... too few arguments.
  expect_refused("rebuild-args",
                 archive(Pickle().global("torch._utils", "_rebuild_tensor_v2").mark().i64(0).tuple().reduce().done()),
                 ErrorKind::kCorruption, "_rebuild_tensor_v2");
  // An OrderedDict built from a number; a storage class called like a function.
  expect_refused("ordereddict-int",
                 archive(Pickle().global("collections", "OrderedDict").mark().i64(5).tuple().reduce().done()),
                 ErrorKind::kCorruption, "OrderedDict");
  expect_refused("storage-called",
                 archive(Pickle().global("torch", "FloatStorage").mark().i64(5).tuple().reduce().done()),
                 ErrorKind::kUnsafe, "torch.FloatStorage");
  // A persistent id that is not a storage.
  expect_refused("persid-kind", archive(Pickle().mark().str("module").str("x").tuple().op("Q").done()),
                 ErrorKind::kUnsafe, "persistent id of kind 'module'");
}

// TorchScript archives (constants.pkl present) are read as object trees, never run; a torch.save
// archive may not name a TorchScript class at all.
std::string script_archive(const std::string& pickle) {
  return build_zip({{"archive/data.pkl", pickle},
                    {"archive/constants.pkl", Pickle().op(")").done()},
                    {"archive/version", "3\n"}})
      .bytes;
}

TEST(Hostile, TorchScriptObjectsAreReadAsDataOrRefused) {
  Pickle obj = Pickle().global("__torch__", "Module").op(")").op("\x81");  // Module.__new__()
  expect_refused("script-in-torch-save", archive(Pickle(obj).op("}").op("b").done()), ErrorKind::kUnsafe,
                 "global '__torch__.Module' is not allowed");
  // A custom __setstate__ (a non-dict state) would need the archive's code to run.
  expect_refused("script-setstate", script_archive(Pickle(obj).mark().i64(1).tuple().op("b").done()),
                 ErrorKind::kUnsupported, "custom __setstate__");
  expect_refused("script-args",
                 script_archive(Pickle().global("__torch__", "Module").mark().i64(1).tuple().op("\x81").done()),
                 ErrorKind::kUnsupported, "constructed with arguments");
  // A script class called by REDUCE with a code-running global among its attributes.
  expect_refused("script-os",
                 script_archive(Pickle(obj).op("}").str("x").global("os", "system").op("s").op("b").done()),
                 ErrorKind::kUnsafe, "'os.system'");
  // An optimizer whose state names a parameter no group lists.
  Pickle opt = Pickle(obj).op("}");
  opt.str("state").global("__torch__", "S").op(")").op("\x81").op("}").str("0xdead").op("}").op("s").op("b").op("s");
  opt.str("param_groups").global("__torch__", "G").op(")").op("\x81").op("}").op("b").op("s").op("b");
  expect_refused("script-optimizer", script_archive(opt.done()), ErrorKind::kCorruption,
                 "state for '0xdead', which no param group lists");
  expect_refused("script-not-object", script_archive(Pickle().i64(3).done()), ErrorKind::kCorruption,
                 "holds int, not a module");
}

std::string safetensors_file(const std::string& header, const std::string& buffer, int64_t claimed = -1);

// torch.jit.save wraps typed lists in torch.jit._pickle's builders (each returns its argument):
// read inside a TorchScript archive, refused in a torch.save file as weights_only refuses them;
// a builder called the wrong way is refused, not trusted.
TEST(Hostile, TorchScriptListBuildersAreCheckedAndOnlyForTorchScript) {
  auto module = [](const std::string& attrs) {
    return Pickle().global("__torch__", "M").op(")").op("\x81").op("}").op(attrs).op("b").done();
  };
  auto ints = [](const std::string& builder, const std::string& args) {
    return Pickle().str("x").global("torch.jit._pickle", builder).op(args).reduce().op("s").s.substr(2);
  };
  // Good use loads: List[int], List[float], List[bool], List[str] (type-tagged), Dict[str, int].
  std::string good = ints("build_intlist",
                          "(](K\x01K\x02"
                          "et") +
                     ints("build_doublelist", "(](G" + std::string("?\xf8\0\0\0\0\0\0", 8) + "et") +
                     ints("build_boollist",
                          "(](\x88\x89"
                          "et") +
                     ints("build_tensorlist", "(]t") +
                     Pickle()
                         .str("s")
                         .global("torch.jit._pickle", "restore_type_tag")
                         .op("](")
                         .str("a")
                         .op("e")
                         .str("List[str]")
                         .op("\x86")
                         .reduce()
                         .op("s")
                         .s.substr(2) +
                     Pickle()
                         .str("d")
                         .global("torch.jit._pickle", "restore_type_tag")
                         .op("}")
                         .str("Dict[str, int]")
                         .op("\x86")
                         .reduce()
                         .op("s")
                         .s.substr(2);
  {
    TempDir dir;
    test::write_file(dir.file("typed.pt"), script_archive(module(good)));
    try {
      load(dir.file("typed.pt"));
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
    }
  }
  expect_refused("builder-in-torch-save",
                 archive(Pickle()
                             .op("}")
                             .op(ints("build_intlist",
                                      "(](K\x01"
                                      "et"))
                             .done()),
                 ErrorKind::kUnsafe, "'torch.jit._pickle.build_intlist' is not allowed in a torch.save file");
  expect_refused("builder-no-args", script_archive(module(ints("build_intlist", ")"))), ErrorKind::kCorruption,
                 "torch.jit._pickle.build_intlist takes 1 argument, not 0");
  expect_refused("builder-two-args",
                 script_archive(module(ints("build_boollist",
                                            "(](\x88"
                                            "e]t"))),
                 ErrorKind::kCorruption, "build_boollist takes 1 argument, not 2");
  expect_refused("builder-not-list", script_archive(module(ints("build_intlist", "(K\x05t"))), ErrorKind::kCorruption,
                 "build_intlist: the argument is int, not a list");
  expect_refused("builder-wrong-item",
                 script_archive(module(ints("build_intlist",
                                            "(](K\x01\x88"
                                            "et"))),
                 ErrorKind::kCorruption, "build_intlist: item 1 is bool, not int");
  expect_refused("builder-tensorlist-int",
                 script_archive(module(ints("build_tensorlist",
                                            "(](K\x01"
                                            "et"))),
                 ErrorKind::kCorruption, "build_tensorlist: item 0 is int, not tensor");
  expect_refused("type-tag-one-arg", script_archive(module(ints("restore_type_tag", "(]t"))), ErrorKind::kCorruption,
                 "restore_type_tag takes 2 arguments, not 1");
  expect_refused("type-tag-int-type", script_archive(module(ints("restore_type_tag", "(]K\x01t"))),
                 ErrorKind::kCorruption, "restore_type_tag: the type is int, not a str");
  expect_refused("type-tag-of-int",
                 script_archive(module(ints("restore_type_tag", "(K\x01" + Pickle().str("int").s.substr(2) + "t"))),
                 ErrorKind::kCorruption, "restore_type_tag: the value is int, not a list or dict");
  // Names PyTorch never had are not builders.
  expect_refused("builder-unknown", script_archive(module(ints("build_stringlist", "(]t"))), ErrorKind::kUnsafe,
                 "'torch.jit._pickle.build_stringlist' is not allowed");
}

// Whatever bytes a file puts in a name, the message quotes them as printable text on one line
// (expect_refused checks every message so; these aim at each kind of name).
TEST(Hostile, NamesWithControlBytesOrBadUtf8AreQuotedPrintably) {
  expect_refused("global-bytes", archive(Pickle().global("os\x1b[2J\xff\r", "sys\x07tem\xc3(").op(")").reduce().done()),
                 ErrorKind::kUnsafe, "global 'os\\x1B[2J\\xFF\\r.sys\\x07tem\\xC3(' is not allowed");
  expect_refused("global-bidi",
                 archive(Pickle()
                             .global("a\xe2\x80\xae"
                                     "b",
                                     "\xc2\x85"
                                     "c")
                             .done()),
                 ErrorKind::kUnsafe, "global 'a\\u{202E}b.\\u{0085}c'");
  expect_refused("global-long", archive(Pickle().global(std::string(100000, 'm'), "x").done()), ErrorKind::kUnsafe,
                 std::string(200, 'm') + "...' is not allowed");
  expect_refused("record-bytes",
                 build_zip({{"archive/data.pkl", Pickle().op("N").done()}, {"other\x01\xfe/version", "3\n"}}).bytes,
                 ErrorKind::kCorruption, "record 'other\\x01\\xFE/version' is outside the archive directory");
  expect_refused("persid-bytes", archive(Pickle().mark().str("mod\x1bule").str("x").tuple().op("Q").done()),
                 ErrorKind::kUnsafe, "persistent id of kind 'mod\\x1Bule'");
  expect_refused("st-dtype-bytes",
                 safetensors_file(R"({"a":{"dtype":"F\u0000\u001b","shape":[1],"data_offsets":[0,4]}})", "0000"),
                 ErrorKind::kCorruption, "unknown dtype 'F\\x00\\x1B'");
  expect_refused(
      "st-name-bytes",
      safetensors_file("{\"w\xe2\x80\xae\\t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", "0000"),
      ErrorKind::kCorruption, "tensor 'w\\u{202E}\\t'");
  expect_refused("st-json-bytes", safetensors_file("{\"\x01\x02\": 1}", ""), ErrorKind::kCorruption,
                 "the header is not valid JSON");
}

// --- safetensors ----------------------------------------------------------------------------------

std::string safetensors_file(const std::string& header, const std::string& buffer, int64_t claimed) {
  std::string out = le64(claimed >= 0 ? uint64_t(claimed) : header.size()) + header + buffer;
  return out;
}

TEST(Hostile, SafetensorsHeadersThatLieAreRefused) {
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  auto st = [&](const std::string& entries, size_t buffer) {
    return safetensors_file("{" + entries + "}", std::string(buffer, '\1'));
  };
  expect_refused("st-overlap",
                 st(R"("a":{)" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 + R"(,"data_offsets":[4,12]})", 12),
                 ErrorKind::kCorruption, "tensor 'b': data_offsets [4, 12] overlap (the previous tensor ends at 8)");
  expect_refused("st-hole",
                 st(R"("a":{)" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 + R"(,"data_offsets":[12,20]})", 20),
                 ErrorKind::kCorruption, "tensor 'b': data_offsets [12, 20] leave a hole");
  expect_refused("st-out-of-range", st(R"("a":{)" + f32x2 + R"(,"data_offsets":[0,8]})", 4), ErrorKind::kCorruption,
                 "tensor 'a' ends at byte 8 of a 4-byte buffer");
  expect_refused("st-trailing", st(R"("a":{)" + f32x2 + R"(,"data_offsets":[0,8]})", 16), ErrorKind::kCorruption,
                 "the tensors end at byte 8 of the buffer but it holds 16 bytes");
  expect_refused("st-size", st(R"("a":{)" + f32x2 + R"(,"data_offsets":[0,12]})", 12), ErrorKind::kCorruption,
                 "data_offsets span 12 bytes but float32 of that shape needs 8");
  expect_refused("st-shape-overflow",
                 st(R"("a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]})", 8),
                 ErrorKind::kCorruption, "its shape overflows");
  expect_refused("st-huge-header", safetensors_file("{}", "", 200'000'000), ErrorKind::kCorruption,
                 "more than the format's limit of 100000000");
  expect_refused("st-short-header", safetensors_file("{}", "", 4096), ErrorKind::kCorruption,
                 "the header claims 4096 bytes but the file has 2");
  expect_refused("st-bad-json", safetensors_file("{\"a\": [1, 2", ""), ErrorKind::kCorruption,
                 "the header is not valid JSON");
  expect_refused("st-bad-utf8", safetensors_file("{\"\xff\xfe\": 1}", ""), ErrorKind::kCorruption,
                 "the header is not valid JSON");
  expect_refused("st-unknown-dtype", st(R"("a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]})", 1),
                 ErrorKind::kCorruption, "tensor 'a': unknown dtype 'Q7'");
  expect_refused("st-uint16", st(R"("a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]})", 2), ErrorKind::kUnsupported,
                 "tensor 'a' has dtype U16, which LibTorch 1.13 does not have");
  expect_refused("st-float8", st(R"("a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})", 1),
                 ErrorKind::kUnsupported, "dtype F8_E4M3");
  expect_refused("st-negative", st(R"("a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4),
                 ErrorKind::kCorruption, "a dimension is not a non-negative integer");
  expect_refused("st-offsets", st(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0]})", 4), ErrorKind::kCorruption,
                 "\"data_offsets\" is not two non-negative integers");
  expect_refused("st-metadata", st(R"("__metadata__":{"k":3})", 0), ErrorKind::kCorruption,
                 "metadata 'k' is not a string");
  expect_refused("st-not-object", safetensors_file("{}", "").replace(8, 2, "{]"), ErrorKind::kCorruption,
                 "the header is not valid JSON");
}

// --- the pickle's own structure ---------------------------------------------------------------------

TEST(Hostile, DeepNestingHugeMemoIndicesAndBombsAreRefused) {
  Pickle deep;
  for (int i = 0; i < 100000; ++i) deep.op("]");  // 100k empty lists nested by APPEND below
  for (int i = 0; i < 99999; ++i) deep.op("a");
  expect_refused("deep", archive(deep.done()), ErrorKind::kCorruption, "nest");
  // A memo reference to an index never stored, far beyond any dense table.
  expect_refused("memo-get", archive(Pickle().op("j" + le32(0xfffffff0u)).done()), ErrorKind::kCorruption, "memo");
  // A memo slot at the top of the index range works (sparse), but a reference beside it fails.
  expect_refused("memo-put", archive(Pickle().op("N").op("r" + le32(0xffffffffu)).op("j" + le32(0xfffffffeu)).done()),
                 ErrorKind::kCorruption, "memo");
  // A billion-laughs list: each level holds the previous one ten times (10**39 objects).
  Pickle laughs;
  laughs.op("]").op(std::string("q\0", 2)).op("0");
  for (int level = 1; level < 40; ++level) {
    laughs.op("]").op("(");
    for (int i = 0; i < 10; ++i) laughs.op(std::string("h") + char(level - 1));
    laughs.op("e").op(std::string("q") + char(level)).op("0");
  }
  laughs.op(std::string("h") + char(39));
  expect_refused("laughs", archive(laughs.done()), ErrorKind::kCorruption, "expan");
  // A string longer than the pickle.
  expect_refused("long-str", archive(Pickle().op("X" + le32(0x7fffffff) + "abc").done()), ErrorKind::kCorruption,
                 "data.pkl");
}

// --- tensors against their storages -----------------------------------------------------------------

TEST(Hostile, ShapesStridesAndOffsetsThatLeaveTheStorageAreRefused) {
  auto one = [](const std::string& name, int64_t numel, int64_t offset, std::vector<int64_t> sizes,
                std::vector<int64_t> strides, size_t record_floats, const std::string& needle) {
    std::string pkl = Pickle().op("}").str("w").tensor("0", numel, offset, sizes, strides).op("s").done();
    expect_refused(name, archive(pkl, {{"0", floats(record_floats)}}), ErrorKind::kCorruption, needle);
  };
  one("past-storage", 4, 0, {5}, {1}, 4, "storage");
  one("offset-past", 4, 3, {2}, {1}, 4, "storage");
  one("negative-offset", 4, -1, {2}, {1}, 4, "offset");
  one("negative-stride", 4, 3, {4}, {-1}, 4, "stride");
  one("negative-size", 4, 0, {-2}, {1}, 4, "size");
  one("numel-overflow", 4, 0, {int64_t(1) << 62, int64_t(1) << 62}, {1, 1}, 4, "overflow");
  one("stride-overflow", 4, 0, {4, 2}, {int64_t(1) << 62, 1}, 4, "overflow");
  // The storage claims more elements than its record holds, or an absurd count.
  one("record-short", 400, 0, {4}, {1}, 4, "archive/data/0");
  one("numel-huge", int64_t(1) << 61, 0, {4}, {1}, 4, "archive/data/0");
  // A storage whose record is missing.
  expect_refused("record-missing",
                 archive(Pickle().op("}").str("w").tensor("7", 4, 0, {4}, {1}).op("s").done(), {{"0", floats(4)}}),
                 ErrorKind::kCorruption, "storage '7' has no record 'data/7'");
}

// --- the zip container -------------------------------------------------------------------------------

TEST(Hostile, ZipNamesThatEscapeRepeatOrOverlapAreRefused) {
  std::string pkl = Pickle().op("}").done();
  auto with = [&](const std::string& extra) {
    return build_zip({{"archive/data.pkl", pkl}, {extra, "x"}, {"archive/version", "3\n"}}).bytes;
  };
  expect_refused("dotdot", with("archive/../../etc/passwd"), ErrorKind::kUnsafe, "escapes the archive with '..'");
  expect_refused("absolute", with("/etc/passwd"), ErrorKind::kUnsafe, "is absolute");
  expect_refused("backslash", with("archive\\..\\x"), ErrorKind::kUnsafe, "forbidden characters");
  expect_refused("duplicate", with("archive/data.pkl"), ErrorKind::kCorruption,
                 "duplicate zip entry 'archive/data.pkl'");
  // The first entry claims to run into the second (entries sharing bytes: a zip-bomb technique).
  Zip z = build_zip({{"archive/data.pkl", pkl}, {"archive/data/0", floats(4)}, {"archive/version", "3\n"}});
  for (size_t field : {20u, 24u}) z.bytes.replace(z.central[0] + field, 4, le32(uint32_t(pkl.size() + 40)));
  expect_refused("overlap", z.bytes, ErrorKind::kCorruption, "overlap");
  // An entry whose data lies past the end of the file.
  Zip far = build_zip({{"archive/data.pkl", pkl}, {"archive/version", "3\n"}});
  far.bytes.replace(far.central[1] + 42, 4, le32(0x7ffffff0));
  expect_refused("out-of-file", far.bytes, ErrorKind::kCorruption, "archive/version");
}

TEST(Hostile, ZipBombsAndWrongChecksumsAreRefused) {
  std::string pkl = Pickle().op("}").done();
  // 64 MiB of zeros deflate to ~64 KiB; the entry then claims 16 GiB (a ratio no deflate stream
  // reaches): refused before anything is allocated.
  Zip bomb = build_zip(
      {{"archive/data.pkl", Pickle().op("}").str("w").tensor("0", 0xfffffff0 / 4, 0, {4}, {1}).op("s").done()},
       {"archive/data/0", std::string(64 << 20, '\0'), true},
       {"archive/version", "3\n"}});
  bomb.bytes.replace(bomb.central[1] + 24, 4, le32(0xfffffff0u));
  bomb.bytes.replace(bomb.local[1] + 22, 4, le32(0xfffffff0u));
  expect_refused("bomb", bomb.bytes, ErrorKind::kCorruption, "claims 4294967280 bytes from");
  // A pickle whose stored CRC-32 is wrong.
  Zip crc = build_zip({{"archive/data.pkl", pkl}, {"archive/version", "3\n"}});
  crc.bytes.replace(crc.central[0] + 16, 4, le32(0xdeadbeef));
  crc.bytes.replace(crc.local[0] + 14, 4, le32(0xdeadbeef));
  expect_refused("crc-pickle", crc.bytes, ErrorKind::kCorruption, "CRC-32 mismatch");
  // A tensor record whose bytes were changed after the CRC was taken.
  std::string good = good_archive();
  size_t at = good.find(floats(4));
  ASSERT_NE(at, std::string::npos);
  good[at + 5] ^= 0x40;
  expect_refused("crc-data", good, ErrorKind::kCorruption, "CRC-32 mismatch");
}

TEST(Hostile, TruncationAtEveryStructuralBoundaryIsRefused) {
  // A real ckpt-written file with several records: cut at every local header, data start,
  // central entry and the end record, and one byte either side of each.
  Value v = Value::new_dict();
  for (int i = 0; i < 3; ++i) {
    TensorRef t;
    t.storage = make_storage(DType::kFloat32, 4096);
    std::memset(t.storage->data(), 0, 4096);  // (no stray "PK" signatures in the data)
    t.sizes = {1024};
    t.strides = {1};
    v.dict().set("t" + std::to_string(i), Value(t));
  }
  std::string bytes = save_to_bytes(v);
  auto map = io::memory_file(bytes, "whole.pt");
  std::vector<uint64_t> cuts = {0, 1, 4, 21, 22};
  for (const auto& e : zip::read_directory(map->data(), map->size())) {
    for (uint64_t b : {e.header_offset, e.data_offset, e.data_offset + e.compressed_size})
      for (int64_t d : {-1, 0, 1}) cuts.push_back(uint64_t(int64_t(b) + d));
  }
  for (size_t p = bytes.rfind(std::string("PK\x01\x02", 4)); p != std::string::npos && p > 0;
       p = bytes.rfind(std::string("PK\x01\x02", 4), p - 1))
    cuts.push_back(p);
  cuts.push_back(bytes.rfind(std::string("PK\x05\x06", 4)));
  cuts.push_back(bytes.size() - 1);
  for (uint64_t n : cuts) {
    if (n >= bytes.size()) continue;
    expect_refused("cut-" + std::to_string(n), bytes.substr(0, n), ErrorKind::kCorruption, "");
  }
}

}  // namespace
}  // namespace ckpt
