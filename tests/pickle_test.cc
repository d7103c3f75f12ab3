#include "format/pickle.h"

#include <gtest/gtest.h>

#include "format/value_access.h"
#include "test_util.h"

namespace ckpt {
namespace {

using test::expect_error;
using test::unhex;

// A string literal with embedded NULs, its length taken from the array.
template <size_t N>
std::string bin(const char (&s)[N]) {
  return std::string(s, N - 1);
}

Value unpickle_str(const std::string& bytes, pickle::Limits limits = {}) {
  return pickle::unpickle(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), nullptr, limits);
}

// CPython 3.11 pickle.dumps of
//   {'a': [1, 2.5, 'xé', None, True, False, (1, 2), (1, 2, 3, 4), b'\x00\xff', 2**70, -2**70,
//          -1, 300, 70000, -70000, 2**40], 'b': {1: 2, 'k': ()}, 's': {7}, 'f': frozenset([8])}
const char* kProtocols[] = {
    "80027d71002858010000006171015d7102284b01474004000000000000580300000078c3a971034e88894b014b02867104284b014b024b034b"
    "04747105635f636f646563730a656e636f64650a7106580300000000c3bf710758060000006c6174696e31710886710952710a8a0900000000"
    "00000000408a090000000000000000c04affffffff4d2c014a701101004a90eefeff8a0600000000000165580100000062710b7d710c284b01"
    "4b0258010000006b710d2975580100000073710e635f5f6275696c74696e5f5f0a7365740a710f5d71104b0761857111527112580100000066"
    "7113635f5f6275696c74696e5f5f0a66726f7a656e7365740a71145d71154b0861857116527117752e",
    "80037d71002858010000006171015d7102284b01474004000000000000580300000078c3a971034e88894b014b02867104284b014b024b034b"
    "04747105430200ff71068a090000000000000000408a090000000000000000c04affffffff4d2c014a701101004a90eefeff8a060000000000"
    "016558010000006271077d7108284b014b0258010000006b71092975580100000073710a636275696c74696e730a7365740a710b5d710c4b07"
    "6185710d52710e580100000066710f636275696c74696e730a66726f7a656e7365740a71105d71114b0861857112527113752e",
    "8004958b000000000000007d94288c0161945d94284b014740040000000000008c0378c3a9944e88894b014b028694284b014b024b034b0474"
    "94430200ff948a090000000000000000408a090000000000000000c04affffffff4d2c014a701101004a90eefeff8a06000000000001658c01"
    "62947d94284b014b028c016b9429758c0173948f94284b07908c016694284b089194752e",
    "8005958b000000000000007d94288c0161945d94284b014740040000000000008c0378c3a9944e88894b014b028694284b014b024b034b0474"
    "94430200ff948a090000000000000000408a090000000000000000c04affffffff4d2c014a701101004a90eefeff8a06000000000001658c01"
    "62947d94284b014b028c016b9429758c0173948f94284b07908c016694284b089194752e",
};

TEST(Pickle, ReadsProtocols2To5) {
  for (const char* hex : kProtocols) {
    SCOPED_TRACE(std::string(hex).substr(0, 4));
    Value v = unpickle_str(unhex(hex));
    const auto& a = v["a"].items();
    ASSERT_EQ(a.size(), 16u);
    EXPECT_EQ(a[0].to_int(), 1);
    EXPECT_EQ(a[1].to_double(), 2.5);
    EXPECT_EQ(a[2].to_string(), "x\xc3\xa9");
    EXPECT_TRUE(a[3].is_none());
    EXPECT_TRUE(a[4].to_bool());
    EXPECT_FALSE(a[5].to_bool());
    EXPECT_EQ(a[6].items().size(), 2u);
    EXPECT_TRUE(a[7].is_tuple());
    EXPECT_EQ(a[8].to_bytes(), std::string("\x00\xff", 2));
    EXPECT_EQ(a[9].big_int_bytes(), unhex("000000000000000040"));   // 2**70
    EXPECT_EQ(a[10].big_int_bytes(), unhex("0000000000000000c0"));  // -2**70
    EXPECT_EQ(a[11].to_int(), -1);
    EXPECT_EQ(a[12].to_int(), 300);
    EXPECT_EQ(a[13].to_int(), 70000);
    EXPECT_EQ(a[14].to_int(), -70000);
    EXPECT_EQ(a[15].to_int(), int64_t{1} << 40);
    EXPECT_EQ(v["b"].dict().find(Value(1))->to_int(), 2);
    EXPECT_EQ(v["s"].object_type(), "builtins.set");
    EXPECT_EQ(v["s"].object_args()[0][0].to_int(), 7);
    EXPECT_EQ(v["f"].object_type(), "builtins.frozenset");
  }
}

TEST(Pickle, MemoSharesObjects) {
  // {'x': shared, 'y': shared} with shared = [1]
  Value v = unpickle_str(unhex("80027d71002858010000007871015d71024b016158010000007971036802752e"));
  EXPECT_EQ(ValueAccess::node(v["x"]), ValueAccess::node(v["y"]));
}

TEST(Pickle, WriterRoundTrip) {
  Value root = Value::new_dict();
  Dict& d = root.dict();
  d.set("int", 5);
  d.set("neg", -300);
  d.set("i32", int64_t{-2000000000});
  d.set("i64", int64_t{1} << 50);
  d.set("min", INT64_MIN);
  d.set("big", Value::big_int(unhex("000000000000000040")));
  d.set("float", 0.1);
  d.set("inf", 1.0 / 0.0);
  d.set("str", "ünïcode ✓");
  d.set("bytes", Value::bytes(std::string("\x00\x80\xff", 3)));
  d.set("empty_bytes", Value::bytes(""));
  d.set(Value(7), Value::tuple({Value(), true, false}));
  Value shared = Value::list({1, 2});
  d.set("l1", shared);
  d.set("l2", shared);
  std::vector<Value> many;
  for (int i = 0; i < 2500; ++i) many.push_back(i);
  d.set("many", Value::list(many));
  Value od = Value::ordered_dict();
  od.dict().set("w", 1.5);
  Value meta = Value::ordered_dict();
  meta.dict().set("", Value::new_dict());
  Value attrs = Value::new_dict();
  attrs.dict().set("_metadata", meta);
  od.dict().set_attributes(attrs);
  d.set("od", od);
  Value counter{Dict(Dict::Flavor::kCounter)};
  counter.dict().set(3, 1);
  d.set("counter", counter);
  d.set("device", Value::object("torch.device", Value::tuple({"cpu"})));
  d.set("dtype", Value::object("torch.float16"));
  d.set("set", Value::object("builtins.set", Value::tuple({Value::list({1})})));

  std::string bytes = pickle::pickle(root, [](const TensorRef&) { return std::string("0"); });
  Value back = unpickle_str(bytes);
  std::string why;
  EXPECT_TRUE(test::deep_equal(root, back, &why)) << why;
  EXPECT_EQ(ValueAccess::node(back["l1"]), ValueAccess::node(back["l2"]));
}

TEST(Pickle, RefusesForbiddenGlobals) {
  // cposix\nsystem\n(S'echo pwned'\ntR.
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x02"
                "cposix\nsystem\nX\x04\x00\x00\x00"
                "echo\x85R."));
      },
      ErrorKind::kUnsafe, "global 'posix.system' is not allowed");
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x02"
                "c__builtin__\neval\n."));
      },
      ErrorKind::kUnsafe, "global 'builtins.eval'");
  // Protocol 4 STACK_GLOBAL spelling the same thing.
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x04\x8c\x02"
                "os\x8c\x06"
                "system\x93."));
      },
      ErrorKind::kUnsafe, "global 'os.system'");
}

TEST(Pickle, RefusesCallingAValue) {
  // A dtype global is allowed as a value but may not be called.
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x02"
                "ctorch\nfloat32\n)R."));
      },
      ErrorKind::kUnsafe, "'torch.float32' may not be called");
}

TEST(Pickle, RefusesProtocol0AndUnknownOpcodes) {
  expect_error([] { unpickle_str("\x80\x02I42\n."); }, ErrorKind::kUnsafe, "INT (protocol 0)");
  expect_error([] { unpickle_str("\x80\x02\xff."); }, ErrorKind::kCorruption, "unknown pickle opcode");
  expect_error([] { unpickle_str("\x80\x07N."); }, ErrorKind::kUnsupported, "pickle protocol 7");
}

TEST(Pickle, RefusesMalformedStreams) {
  expect_error([] { unpickle_str(bin("\x80\x02")); }, ErrorKind::kCorruption, "truncated");
  expect_error(
      [] {
        unpickle_str(
            "\x80\x02"
            "a.");
      },
      ErrorKind::kCorruption, "underflow");
  expect_error([] { unpickle_str("\x80\x02h\x05."); }, ErrorKind::kCorruption, "memo key 5");
  expect_error([] { unpickle_str("\x80\x02NN."); }, ErrorKind::kCorruption, "STOP with 2 objects");
  expect_error(
      [] {
        unpickle_str(
            "\x80\x02X\xff\xff\xff\x7f"
            "abc.");
      },
      ErrorKind::kCorruption, "truncated");
  expect_error([] { unpickle_str("\x80\x02}]]s."); }, ErrorKind::kCorruption, "unhashable");
}

TEST(Pickle, EveryPrefixFailsCleanly) {
  std::string full = unhex(kProtocols[0]);
  for (size_t n = 0; n < full.size(); ++n) {
    std::string cut = full.substr(0, n);
    EXPECT_THROW(unpickle_str(cut), Error) << "prefix " << n;
  }
}

TEST(Pickle, RefusesCycles) {
  // l = []; l.append(l)
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x02]q\x00h\x00"
                "a."));
      },
      ErrorKind::kCorruption, "cyclic");
  // d = {}; d['d'] = [d]
  expect_error(
      [] {
        unpickle_str(
            bin("\x80\x02}q\x00X\x01\x00\x00\x00"
                "d]h\x00"
                "as."));
      },
      ErrorKind::kCorruption, "cyclic");
}

std::string u32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

TEST(Pickle, RefusesExponentialExpansion) {
  // list_i = [list_{i-1}, list_{i-1}]: 41 nodes that expand to 2**41 objects.
  std::string p = "\x80\x02]r" + u32(0);
  for (uint32_t i = 1; i <= 40; ++i)
    p += "]r" + u32(i) + "(j" + u32(i - 1) + "j" + u32(i - 1) + "e0";  // build, then POP it
  p += "j" + u32(40) + "\x86.";                                        // (list_0, list_40)
  expect_error([&] { unpickle_str(p); }, ErrorKind::kCorruption, "expands to more than");
}

TEST(Pickle, RefusesDeepNesting) {
  std::string p = "\x80\x02";
  for (int i = 0; i < 2000; ++i) p += "(";
  expect_error([&] { unpickle_str(p + "."); }, ErrorKind::kCorruption, "deeper than 1000");
  // Nesting through the memo, with no open MARK: list_i = [list_{i-1}].
  std::string q = "\x80\x02]r" + u32(0);
  for (uint32_t i = 1; i < 1500; ++i) q += "]r" + u32(i) + "j" + u32(i - 1) + "a0";
  q += "j" + u32(1499) + "\x86.";
  expect_error([&] { unpickle_str(q); }, ErrorKind::kCorruption, "deeper than 1000");
}

TEST(Pickle, PersistentIdsGoToTheLoader) {
  // (X'storage' ... ) Q  -> the loader's object
  std::string p = bin("\x80\x02(X\x07\x00\x00\x00storageK\x01tQ.");
  int calls = 0;
  Value v = pickle::unpickle(reinterpret_cast<const std::byte*>(p.data()), p.size(), [&](const Value& pid) {
    ++calls;
    EXPECT_EQ(pid[0].to_string(), "storage");
    return Value(42);
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(v.to_int(), 42);
  // Without a loader, a persistent id is an error, not a crash.
  EXPECT_THROW(unpickle_str(p), Error);
}

}  // namespace
}  // namespace ckpt
