// Collectives of a save, a load and a run's commit, each bounded by a timeout.
#include "dist/collectives.h"

#include <cstring>

#include "util/errors.h"

namespace ckpt::dist {

namespace {
constexpr size_t kStatusBytes = 4096;

void encode(const Status& s, uint8_t* p) {
  p[0] = s.ok ? 0 : uint8_t(1 + int(s.kind));
  for (int i = 0; i < 8; ++i) p[1 + i] = uint8_t(s.number >> (8 * i));
  const size_t n = std::min(s.message.size(), kStatusBytes - 10);
  std::memcpy(p + 9, s.message.data(), n);
}

Status decode(const uint8_t* p) {
  Status s;
  s.ok = p[0] == 0;
  if (!s.ok) s.kind = static_cast<ErrorKind>(p[0] - 1);
  for (int i = 0; i < 8; ++i) s.number |= uint64_t(p[1 + i]) << (8 * i);
  s.message.assign(reinterpret_cast<const char*>(p + 9), strnlen(reinterpret_cast<const char*>(p + 9), kStatusBytes - 10));
  return s;
}
}  // namespace

void wait_for(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout, const char* what) {
  try {
    work->wait(timeout);
  } catch (const std::exception& e) {
    fail(ErrorKind::kIO, "ckpt::dist: ", what, " failed: a rank died, or did not answer within ", timeout.count(),
         " ms (hung, or still writing): ", printable(e.what(), 300));
  }
}

Status broadcast_status(c10d::ProcessGroup& pg, const Status& mine, std::chrono::milliseconds timeout,
                        const char* what) {
  at::Tensor t = at::zeros({int64_t(kStatusBytes)}, at::kByte);
  if (pg.getRank() == 0) encode(mine, t.data_ptr<uint8_t>());
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions bo;
  bo.rootRank = 0;
  wait_for(pg.broadcast(v, bo), timeout, what);
  return decode(t.data_ptr<uint8_t>());
}

std::vector<Status> all_statuses(c10d::ProcessGroup& pg, const Status& mine, std::chrono::milliseconds timeout,
                                 const char* what) {
  const int world = pg.getSize();
  std::vector<uint8_t> bytes(kStatusBytes, 0);
  encode(mine, bytes.data());
  const int64_t len = int64_t(9 + strnlen(reinterpret_cast<const char*>(bytes.data() + 9), kStatusBytes - 10) + 1);
  std::vector<at::Tensor> in{at::tensor({len}, at::kLong)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int i = 0; i < world; ++i) out[0].push_back(at::empty({1}, at::kLong));
  wait_for(pg.allgather(out, in), timeout, what);
  int64_t maxlen = 1;
  for (int i = 0; i < world; ++i) maxlen = std::max(maxlen, out[0][i].item<int64_t>());
  maxlen = std::min<int64_t>(maxlen, kStatusBytes);
  at::Tensor padded = at::zeros({int64_t(kStatusBytes)}, at::kByte);
  std::memcpy(padded.data_ptr<uint8_t>(), bytes.data(), kStatusBytes);
  std::vector<at::Tensor> in2{padded.narrow(0, 0, maxlen).contiguous()};
  std::vector<std::vector<at::Tensor>> out2(1);
  for (int i = 0; i < world; ++i) out2[0].push_back(at::zeros({maxlen}, at::kByte));
  wait_for(pg.allgather(out2, in2), timeout, what);
  std::vector<Status> all;
  std::vector<uint8_t> buf(kStatusBytes);
  for (int i = 0; i < world; ++i) {
    std::fill(buf.begin(), buf.end(), 0);
    std::memcpy(buf.data(), out2[0][i].data_ptr<uint8_t>(), size_t(maxlen));
    all.push_back(decode(buf.data()));
  }
  return all;
}

// Rank 0 gets every rank's bytes (two collectives: lengths, then the padded bytes); the other
// ranks get an empty vector.
std::vector<std::string> gather_bytes(c10d::ProcessGroup& pg, const std::string& mine,
                                      std::chrono::milliseconds timeout) {
  const int world = pg.getSize();
  std::vector<at::Tensor> in{at::tensor({static_cast<int64_t>(mine.size())}, at::kLong)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int i = 0; i < world; ++i) out[0].push_back(at::empty({1}, at::kLong));
  wait_for(pg.allgather(out, in), timeout, "exchanging manifest sizes");
  int64_t maxlen = 1;
  std::vector<int64_t> lens(world);
  for (int i = 0; i < world; ++i) maxlen = std::max(maxlen, lens[i] = out[0][i].item<int64_t>());
  at::Tensor padded = at::zeros({maxlen}, at::kByte);
  std::memcpy(padded.data_ptr<uint8_t>(), mine.data(), mine.size());
  std::vector<at::Tensor> in2{padded};
  std::vector<std::vector<at::Tensor>> out2;
  if (pg.getRank() == 0) {
    out2.resize(1);
    for (int i = 0; i < world; ++i) out2[0].push_back(at::empty({maxlen}, at::kByte));
  }
  c10d::GatherOptions go;
  go.rootRank = 0;
  wait_for(pg.gather(out2, in2, go), timeout, "gathering the manifests");
  std::vector<std::string> res;
  if (pg.getRank() == 0)
    for (int i = 0; i < world; ++i)
      res.emplace_back(reinterpret_cast<const char*>(out2[0][i].data_ptr<uint8_t>()), size_t(lens[i]));
  return res;
}


}  // namespace ckpt::dist
