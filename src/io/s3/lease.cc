// The writer lease of an s3:// run directory; the protocol is written out in lease.h.
#include "io/s3/lease.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "util/errors.h"

namespace ckpt::io::s3 {

namespace {

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_token() {
  std::random_device rd;
  std::mt19937_64 gen((uint64_t{rd()} << 32) ^ rd());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(gen()),
                static_cast<unsigned long long>(gen()));
  return buf;
}

struct LeaseText {
  std::string owner, token;
  double expires_unix = 0;
};

std::string format_lease(const LeaseText& l) {
  char exp[64];
  std::snprintf(exp, sizeof exp, "%.3f", l.expires_unix);
  return str_cat("ckpt-lease/1\nowner: ", l.owner, "\ntoken: ", l.token, "\nexpires_unix: ", exp, "\n");
}

// A lease object that does not parse is treated as expired: only ckpt writes it.
LeaseText parse_lease(const std::string& text) {
  LeaseText l;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    auto field = [&](const char* name, std::string* out) {
      const std::string prefix = std::string(name) + ": ";
      if (line.rfind(prefix, 0) == 0) *out = line.substr(prefix.size());
    };
    field("owner", &l.owner);
    field("token", &l.token);
    std::string exp;
    field("expires_unix", &exp);
    if (!exp.empty()) l.expires_unix = std::strtod(exp.c_str(), nullptr);
  }
  return l;
}

// Whether `owner` ("pid N on HOST") is a process of this host that no longer exists: its lease
// need not be waited out (a killed trainer restarted on the same machine resumes at once).
bool owner_is_dead_here(const std::string& owner) {
  long pid = 0;
  char host[256] = {};
  if (std::sscanf(owner.c_str(), "pid %ld on %255s", &pid, host) != 2 || pid <= 0) return false;
  char mine[256] = {};
  ::gethostname(mine, sizeof mine - 1);
  if (std::string(host) != mine) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

class Lease final : public FileLock {
 public:
  Lease(std::shared_ptr<Client> client, std::string uri, std::string owner)
      : client_(std::move(client)), uri_(std::move(uri)), u_(parse_uri(uri_)), ttl_(client_->config().lease_s) {
    mine_.owner = std::move(owner);
    mine_.token = random_token();
  }

  ~Lease() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (renewer_.joinable()) renewer_.join();
    try {
      if (lost_.empty() && parse_lease(client_->get(u_)).token == mine_.token) client_->remove(u_);
    } catch (...) {
      // It expires on its own.
    }
  }

  // Steps 1-3.
  void acquire() {
    for (int attempt = 0; attempt < 8; ++attempt) {
      mine_.expires_unix = now_unix() + ttl_;
      const std::string text = format_lease(mine_);
      bool taken = client_->put(u_, text.data(), text.size(), /*if_none_match=*/true, &etag_);
      if (!taken) {
        std::string held_etag;
        std::string body;
        try {
          body = client_->get(u_, &held_etag);
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::kNotFound) continue;  // released meanwhile: create it again
          throw;
        }
        LeaseText held = parse_lease(body);
        const double left = held.expires_unix - now_unix();
        if (left > 0 && !owner_is_dead_here(held.owner)) {
          char secs[32];
          std::snprintf(secs, sizeof secs, "%.0f", left);
          fail(ErrorKind::kIO, uri_, ": leased by another writer (", held.owner.empty() ? "unknown" : held.owner,
               "; the lease expires in ", secs, " s unless renewed)");
        }
        taken = client_->put_if_match(u_, text.data(), text.size(), held_etag, &etag_);
        if (!taken) continue;  // another taker won, or it was released: look again
      }
      std::string back_etag;
      LeaseText back = parse_lease(client_->get(u_, &back_etag));
      // Some servers answer a PUT before its bytes can be read (s3rver; eventually consistent
      // S3-compatible stores): an empty or unreadable lease is read again, a bounded few times.
      for (int reread = 0; back.token.empty() && reread < 20; ++reread) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        back = parse_lease(client_->get(u_, &back_etag));
      }
      if (back.token.empty())
        fail(ErrorKind::kIO, uri_, ": the lease this process wrote still reads back empty or unreadable after 1 s: ",
             "the server does not return what it stored, so the one-writer rule cannot be checked");
      if (back.token != mine_.token) {
        fail(ErrorKind::kIO, uri_, ": leased by another writer (", back.owner,
             "; it wrote the lease right after this process did: the server ignores conditional writes, "
             "so two writers raced)");
      }
      if (!back_etag.empty()) etag_ = back_etag;
      probe_conditional_writes(text);
      expires_ = mine_.expires_unix;
      renewer_ = std::thread([this] { renew_loop(); });
      return;
    }
    fail(ErrorKind::kIO, uri_, ": could not take the lease: it changed hands 8 times while trying");
  }

  std::string caveat() const override { return caveat_; }

  void check() const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!lost_.empty()) fail(ErrorKind::kIO, uri_, ": this writer lost the run's lease: ", lost_);
    if (now_unix() > expires_)
      fail(ErrorKind::kIO, uri_, ": this writer's lease expired (not renewed for ", ttl_,
           " s: the server was unreachable); another writer may own the run now");
  }

 private:
  // Step 3b: whether the server honours If-None-Match. The lease exists and is ours, so a create-
  // only PUT of the same text must answer 412; a server that writes it instead ignores
  // conditional headers (s3rver), and the one-writer rule then rests on the read-back alone.
  void probe_conditional_writes(const std::string& text) {
    std::string etag;
    if (!client_->put(u_, text.data(), text.size(), /*if_none_match=*/true, &etag)) return;
    if (!etag.empty()) etag_ = etag;
    caveat_ = str_cat(uri_, ": the server ignores conditional writes (If-None-Match): one writer per run is ",
                      "checked only by reading the lease back, so two writers starting at the same moment may ",
                      "both proceed (doc/object-storage.md)");
  }

  // Step 4.
  void renew_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    const auto interval = std::chrono::milliseconds(ttl_ * 1000 / 3);
    while (!stop_) {
      if (cv_.wait_for(lock, interval, [&] { return stop_; })) return;
      LeaseText next = mine_;
      next.expires_unix = now_unix() + ttl_;
      const std::string text = format_lease(next);
      const std::string expected = etag_;
      lock.unlock();
      std::string etag;
      bool ok = false, answered = false;
      try {
        ok = client_->put_if_match(u_, text.data(), text.size(), expected, &etag);
        answered = true;
      } catch (const Error&) {
        // Unreachable for now: try again next round; check() fails once the expiry passes.
      }
      std::string holder;
      if (answered && !ok) {
        try {
          holder = parse_lease(client_->get(u_)).owner;
        } catch (...) {
        }
      }
      lock.lock();
      if (ok) {
        etag_ = etag;
        expires_ = next.expires_unix;
      } else if (answered) {
        lost_ = str_cat("it was taken over by ", holder.empty() ? "another writer" : holder);
        return;
      }
    }
  }

  std::shared_ptr<Client> client_;
  std::string uri_;
  Uri u_;
  long ttl_;
  LeaseText mine_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string etag_;     // of our last write
  double expires_ = 0;   // of our last successful write
  std::string lost_;     // why the lease is no longer ours
  std::string caveat_;   // set when the server ignores conditional writes
  std::thread renewer_;
};

}  // namespace

std::unique_ptr<FileLock> acquire_lease(std::shared_ptr<Client> client, const std::string& uri,
                                        const std::string& owner) {
  auto lease = std::make_unique<Lease>(std::move(client), uri, owner);
  lease->acquire();
  return lease;
}

}  // namespace ckpt::io::s3
