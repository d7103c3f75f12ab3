// ckpt_bench OP WORKLOAD PATH [--cold] — one measurement in a fresh process, printed as one
// JSON line. bench/run_bench.py runs every OP several times and writes bench/RESULTS.md.
//
// Workloads: gpt2  — GPT-2-small (124M float32 parameters in 148 tensors) + Adam's exp_avg,
//                    exp_avg_sq and step: about 1.5 GB;
//            small — 20,000 tensors of 1-64 KiB;
//            huge  — one uint8 tensor over 4 GiB (ZIP64) and a small one.
// Peak memory: /proc/self/clear_refs resets the high-water mark just before the timed
// operation; extra_rss_mb = peak during the operation - resident size before it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include "ckpt/async.h"
#include "ckpt/ckpt.h"
#include "util/crc32.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field)));
  return 0;
}

struct Rss {
  long before_kb;
  Rss() {
    std::ofstream("/proc/self/clear_refs") << "5";  // reset VmHWM to the current RSS
    before_kb = status_kb("VmRSS:");
  }
  double extra_mb() const { return (status_kb("VmHWM:") - before_kb) / 1024.0; }
};

void drop_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void warm_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  std::vector<char> buf(8 << 20);
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ::fsync(fd);
  ::close(fd);
}

uint64_t total_bytes(const std::vector<std::pair<std::string, at::Tensor>>& flat) {
  uint64_t n = 0;
  for (auto& [_, t] : flat) n += t.nbytes();
  return n;
}

void print(const std::string& op, double seconds, double extra_mb, uint64_t bytes, const std::string& more = "") {
  std::printf("{\"op\": \"%s\", \"seconds\": %.6f, \"extra_rss_mb\": %.1f, \"bytes\": %llu%s}\n", op.c_str(), seconds,
              extra_mb, (unsigned long long)bytes, more.c_str());
}

double touch_all(const ckpt::Value& v) {
  // Reads one byte per page of every storage (what first use of every tensor costs).
  volatile uint64_t sum = 0;
  std::function<void(const ckpt::Value&)> walk = [&](const ckpt::Value& x) {
    if (x.is_tensor()) {
      const auto* p = reinterpret_cast<const volatile uint8_t*>(x.tensor().storage->data());
      for (size_t i = 0; i < x.tensor().storage->nbytes(); i += 4096) sum = sum + p[i];
    } else if (x.is_dict()) {
      for (const auto& [k, y] : x.dict()) walk(y);
    } else if (x.is_list() || x.is_tuple()) {
      for (const auto& y : x.items()) walk(y);
    }
  };
  walk(v);
  return double(sum);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 4) {
    std::cerr << "usage: ckpt_bench OP WORKLOAD PATH [--cold]\n";
    return 2;
  }
  std::string op = argv[1], w = argv[2], path = argv[3];
  bool cold = argc > 4 && std::string(argv[4]) == "--cold";
  at::set_num_threads(2);
  // LibTorch initialises itself lazily on its first tensor operation (~0.8 s here); a training
  // process has long paid that, so pay it before any clock starts.
  (void)(at::ones({2}) + 1).sum().item<float>();
  auto prepare_read = [&] { cold ? drop_cache(path) : warm_cache(path); };

  if (op == "make" || op == "save" || op == "save_async" || op == "crc" || op == "torch_save" ||
      op == "raw_write_buffered" || op == "raw_write_direct") {
    std::vector<std::pair<std::string, at::Tensor>> flat;
    ckpt::Value state = bench::make_workload(w, &flat);
    uint64_t bytes = total_bytes(flat);
    ::unlink(path.c_str());
    if (op == "make" || op == "save") {
      Rss rss;
      auto t = Clock::now();
      ckpt::save(state, path);  // durable: returns after fsync of the file and its directory
      print(op, since(t), rss.extra_mb(), bytes);
    } else if (op == "crc") {
      // CRC-32 throughput on the state in memory: the work every save and load does.
      auto t = Clock::now();
      uint32_t c = 0;
      for (auto& [_, x] : flat) c ^= ckpt::crc32_parallel(x.data_ptr(), x.nbytes());
      char more[64];
      std::snprintf(more, sizeof more, ", \"crc\": %u", c);
      print(op, since(t), 0, bytes, more);
    } else if (op == "save_async") {
      ckpt::AsyncSaver saver;
      saver.save(state, path);  // first save: allocates and faults in the snapshot arena
      saver.wait();
      double stall = 0;
      {
        auto t = Clock::now();
        saver.save(state, path);  // steady state: the arena is reused
        stall = since(t);
      }
      auto t2 = Clock::now();
      saver.wait();
      double background = since(t2) + stall;
      // One memcpy of the state into memory that is already touched, for comparison.
      std::vector<at::Tensor> dst;
      for (auto& [_, x] : flat) dst.push_back(at::empty_like(x).fill_(0));
      auto t3 = Clock::now();
      for (size_t i = 0; i < flat.size(); ++i)
        std::memcpy(dst[i].data_ptr(), flat[i].second.data_ptr(), flat[i].second.nbytes());
      double memcpy_s = since(t3);
      char more[128];
      std::snprintf(more, sizeof more, ", \"memcpy_seconds\": %.6f, \"total_seconds\": %.6f", memcpy_s, background);
      print(op, stall, 0, bytes, more);
    } else if (op == "torch_save") {
      Rss rss;
      auto t = Clock::now();
      torch::serialize::OutputArchive archive;
      for (auto& [name, x] : flat) {
        std::string key = name;
        std::replace(key.begin(), key.end(), '.', '_');
        archive.write(key, x);
      }
      archive.save_to(path);
      fsync_path(path);
      print(op, since(t), rss.extra_mb(), bytes);
    } else {
      bool direct = op == "raw_write_direct";
      Rss rss;
      auto t = Clock::now();
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
      if (direct) {
        // The disk's own speed: 8 MiB aligned writes of the same number of bytes.
        const size_t chunk = 8 << 20;
        void* buf;
        posix_memalign(&buf, 4096, chunk);
        std::memset(buf, 1, chunk);
        for (uint64_t off = 0; off < bytes; off += chunk) {
          size_t n = std::min<uint64_t>(chunk, (bytes - off + 4095) / 4096 * 4096);
          if (::pwrite(fd, buf, n, off) != ssize_t(n)) throw std::runtime_error("O_DIRECT write failed");
        }
        ::ftruncate(fd, bytes);
        free(buf);
      } else {
        for (auto& [_, x] : flat) {
          const char* p = static_cast<const char*>(x.data_ptr());
          size_t n = x.nbytes();
          while (n > 0) {
            ssize_t k = ::write(fd, p, n);
            if (k <= 0) throw std::runtime_error("write failed");
            p += k;
            n -= size_t(k);
          }
        }
      }
      ::fsync(fd);
      ::close(fd);
      print(op, since(t), rss.extra_mb(), bytes);
    }
    return 0;
  }

  struct stat st {};
  ::stat(path.c_str(), &st);
  uint64_t bytes = st.st_size;
  if (op == "load") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    ckpt::Value v = ckpt::load(path);
    print(op, since(t), rss.extra_mb(), bytes);
  } else if (op == "load_mmap") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    ckpt::LoadOptions o;
    o.mmap = true;
    o.verify_checksums = false;
    ckpt::Value v = ckpt::load(path, o);
    // The first usable tensor: an at::Tensor over the mapping.
    const ckpt::Value* first = &v;
    while (!first->is_tensor()) first = first->is_dict() ? &first->dict().items()[0].second : &first->items()[0];
    at::Tensor x = first->to_tensor();
    double ready = since(t);
    touch_all(v);
    double all = since(t);
    char more[96];
    std::snprintf(more, sizeof more, ", \"touch_all_seconds\": %.6f", all);
    print(op, ready, rss.extra_mb(), bytes, more);
  } else if (op == "load_mmap_verify") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    ckpt::LoadOptions o;
    o.mmap = true;
    ckpt::Value v = ckpt::load(path, o);
    print(op, since(t), rss.extra_mb(), bytes);
  } else if (op == "verify") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    ckpt::verify(path);
    print(op, since(t), rss.extra_mb(), bytes);
  } else if (op == "torch_load") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    std::vector<at::Tensor> out;
    for (const auto& key : archive.keys()) {
      at::Tensor x;
      archive.read(key, x);
      out.push_back(x);
    }
    print(op, since(t), rss.extra_mb(), bytes);
  } else if (op == "raw_read_direct") {
    // The disk's own read speed: O_DIRECT, 8 MiB requests, into memory already touched.
    prepare_read();
    const size_t chunk = 8 << 20;
    void* buf;
    posix_memalign(&buf, 4096, chunk);
    std::memset(buf, 0, chunk);
    Rss rss;
    auto t = Clock::now();
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
    for (uint64_t off = 0; off < bytes; off += chunk)
      if (::pread(fd, buf, chunk, off) <= 0) throw std::runtime_error("O_DIRECT read failed");
    ::close(fd);
    print(op, since(t), rss.extra_mb(), bytes);
    free(buf);
  } else if (op == "raw_read") {
    prepare_read();
    Rss rss;
    auto t = Clock::now();
    // The bytes into freshly allocated memory, as any loader must produce them.
    char* buf = static_cast<char*>(std::malloc(bytes));
    int fd = ::open(path.c_str(), O_RDONLY);
    uint64_t off = 0;
    while (off < bytes) {
      ssize_t k = ::read(fd, buf + off, std::min<uint64_t>(8 << 20, bytes - off));
      if (k <= 0) throw std::runtime_error("read failed");
      off += uint64_t(k);
    }
    ::close(fd);
    double s = since(t);
    print(op, s, rss.extra_mb(), bytes);
    std::free(buf);
  } else {
    throw std::runtime_error("unknown op " + op);
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "ckpt_bench: " << e.what() << "\n";
  return 1;
}
