#include "io/env.h"

#include "ckpt/serialize.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "io/posix_calls.h"
#include "io/s3/object_env.h"
#include "util/errors.h"

namespace ckpt::io {

PosixCalls& posix_calls() {
  static PosixCalls calls{::pwrite, ::pread, ::read};
  return calls;
}

namespace {

[[noreturn]] void fail_errno(const std::string& what, const std::string& path, int err) {
  fail(err == ENOENT ? ErrorKind::kNotFound : ErrorKind::kIO, path, ": ", what, ": ", std::strerror(err));
}

// Covers the logical and physical block sizes of the disks we run on (512 B / 4 KiB).
constexpr size_t kDirectAlignment = 4096;

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, size_t alignment)
      : path_(std::move(path)), fd_(fd), alignment_(alignment) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void append(const void* data, size_t n) override {
    write_at(size_, data, n);
    size_ += n;
  }

  void write_at(uint64_t offset, const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = posix_calls().pwrite(fd_, p, n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_errno("write failed", path_, errno);
      }
      if (w == 0) fail(ErrorKind::kIO, path_, ": write failed: the device took no bytes at offset ", offset);
      p += w;
      n -= static_cast<size_t>(w);
      offset += static_cast<uint64_t>(w);
    }
  }

  void sync() override {
    if (::fsync(fd_) != 0) fail_errno("fsync failed", path_, errno);
  }

  void close() override {
    if (fd_ < 0) return;
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_errno("close failed", path_, errno);
  }

  uint64_t size() const override { return size_; }
  const std::string& path() const override { return path_; }
  size_t direct_alignment() const override { return alignment_; }

  void truncate(uint64_t size) override {
    while (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) fail_errno("truncate failed", path_, errno);
    }
    size_ = size;
  }

 private:
  std::string path_;
  int fd_;
  size_t alignment_;
  uint64_t size_ = 0;
};

class PosixMappedFile final : public MappedFile {
 public:
  PosixMappedFile(std::string path, int fd, uint64_t size, void* base)
      : path_(std::move(path)), fd_(fd), size_(size), base_(base) {}
  ~PosixMappedFile() override {
    if (base_ != nullptr) ::munmap(base_, size_);
    close_direct();
    ::close(fd_);
  }
  const std::byte* data() const override { return static_cast<const std::byte*>(base_); }
  std::byte* mutable_data() const override { return static_cast<std::byte*>(base_); }
  uint64_t size() const override { return size_; }
  const std::string& path() const override { return path_; }

  void read_at(uint64_t offset, void* dst, size_t n) const override {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t r = posix_calls().pread(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        fail_errno("read failed", path_, errno);
      }
      if (r == 0) fail(ErrorKind::kCorruption, path_, ": unexpected end of file at offset ", offset);
      p += r;
      n -= static_cast<size_t>(r);
      offset += static_cast<uint64_t>(r);
    }
  }

  void prefetch(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const override {
    for (const auto& [offset, n] : ranges)
      ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(n), POSIX_FADV_WILLNEED);
  }

  double resident_fraction(uint64_t offset, uint64_t n) const override {
    if (base_ == nullptr || n == 0) return 1.0;
    const uint64_t page = 4096;
    uint64_t begin = offset / page * page, end = std::min(size_, offset + n);
    std::vector<unsigned char> vec((end - begin + page - 1) / page);
    if (::mincore(static_cast<char*>(base_) + begin, end - begin, vec.data()) != 0) return 1.0;
    size_t resident = 0;
    for (unsigned char c : vec) resident += c & 1;
    return vec.empty() ? 1.0 : double(resident) / double(vec.size());
  }

  void read_direct_at(uint64_t offset, void* dst, size_t n) const override {
    int fd = direct_fd();
    if (fd < 0) return read_at(offset, dst, n);
    char* p = static_cast<char*>(dst);
    uint64_t end = std::min<uint64_t>(offset + n, size_);
    while (offset < end) {
      ssize_t r = posix_calls().pread(fd, p, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL) return read_at(offset, p, static_cast<size_t>(end - offset));  // not for this fs
        fail_errno("read failed", path_, errno);
      }
      if (r == 0) fail(ErrorKind::kCorruption, path_, ": unexpected end of file at offset ", offset);
      p += r;
      n -= static_cast<size_t>(r);
      offset += static_cast<uint64_t>(r);
    }
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
  void* base_;
  mutable std::once_flag direct_once_;
  mutable int direct_fd_ = -1;

  int direct_fd() const {
    std::call_once(direct_once_, [&] { direct_fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC); });
    return direct_fd_;
  }

 public:
  void close_direct() noexcept {
    if (direct_fd_ >= 0) ::close(direct_fd_);
  }
};

class PosixEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) fail_errno("cannot create file", path, errno);
    size_t alignment = 0;
    if (direct) {
      // Reopen the new file with O_DIRECT; filesystems without it (tmpfs) keep the page cache.
      int dfd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
      if (dfd >= 0) {
        ::close(fd);
        fd = dfd;
        alignment = kDirectAlignment;
      }
    }
    return std::make_unique<PosixWritableFile>(path, fd, alignment);
  }

  std::shared_ptr<MappedFile> map_file(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_errno("cannot open file", path, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      fail_errno("cannot stat file", path, err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(ErrorKind::kInvalidArgument, path, ": not a regular file");
    }
    auto size = static_cast<uint64_t>(st.st_size);
    void* base = nullptr;
    if (size > 0) {
      // Copy-on-write: tensors handed out over the mapping may be written by the caller
      // without touching the file.
      base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (base == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        fail_errno("mmap failed", path, err);
      }
    }
    return std::make_shared<PosixMappedFile>(path, fd, size, base);
  }

  void rename_file(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) fail_errno("rename to '" + to + "' failed", from, errno);
  }

  void remove_file(const std::string& path) noexcept override { ::unlink(path.c_str()); }

  void sync_dir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail_errno("cannot open directory", dir, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) fail_errno("fsync of directory failed", dir, err);
  }

  bool file_exists(const std::string& path) override {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
  }
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the last descriptor releases the flock

 private:
  int fd_;
};

class MemoryFile final : public MappedFile {
 public:
  MemoryFile(std::string bytes, std::string name) : bytes_(std::move(bytes)), name_(std::move(name)) {}
  const std::byte* data() const override { return reinterpret_cast<const std::byte*>(bytes_.data()); }
  std::byte* mutable_data() const override { return reinterpret_cast<std::byte*>(const_cast<char*>(bytes_.data())); }
  uint64_t size() const override { return bytes_.size(); }
  const std::string& path() const override { return name_; }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    if (offset > bytes_.size() || n > bytes_.size() - offset)
      fail(ErrorKind::kCorruption, name_, ": unexpected end of file at offset ", offset);
    std::memcpy(dst, bytes_.data() + offset, n);
  }

 private:
  std::string bytes_;
  std::string name_;
};

}  // namespace

std::shared_ptr<MappedFile> memory_file(std::string bytes, std::string name) {
  return std::make_shared<MemoryFile>(std::move(bytes), std::move(name));
}

Env* Env::Default() {
  static PosixEnv posix;
  static Env* env = s3::routing_env(&posix);  // s3:// to object storage, the rest to POSIX
  return env;
}

std::string dirname_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::vector<DirEntry> Env::list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) fail_errno("cannot list directory", dir, errno);
  std::vector<DirEntry> out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    bool is_file = e->d_type == DT_REG;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      is_file = ::lstat((dir + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode);
    }
    out.push_back({std::move(name), is_file});
  }
  ::closedir(d);
  return out;
}

void Env::create_dirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir == "/") return;
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail(ErrorKind::kInvalidArgument, dir, ": exists and is not a directory");
    return;
  }
  create_dirs(dirname_of(dir));
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("cannot create directory", dir, errno);
}

std::unique_ptr<FileLock> Env::lock_file(const std::string& path, const std::string& owner) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("cannot open lock file", path, errno);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    std::string holder(256, '\0');
    ssize_t n = ::pread(fd, holder.data(), holder.size(), 0);
    holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
    ::close(fd);
    if (err == EWOULDBLOCK)
      fail(ErrorKind::kIO, path, ": locked by another writer (", holder.empty() ? "unknown process" : holder, ")");
    fail_errno("cannot lock", path, err);
  }
  // Ours now: record who holds it, for the error the next writer sees.
  if (::ftruncate(fd, 0) == 0) {
    std::string text = owner + "\n";
    (void)!::pwrite(fd, text.data(), text.size(), 0);
  }
  return std::make_unique<PosixFileLock>(fd);
}

void Env::copy_file(const std::string& from, const std::string& to) {
  fail(ErrorKind::kUnsupported, from, ": no copy without reading it (to ", to, ")");
}

uint64_t Env::free_space(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) fail_errno("cannot query free space", path, errno);
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

uint64_t Env::file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_errno("cannot stat file", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

std::string Env::read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("cannot open file", path, errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t r = posix_calls().read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail_errno("read failed", path, err);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

void Env::link_file(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return;
  int err = errno;
  if (err == EPERM || err == EXDEV || err == EOPNOTSUPP || err == EMLINK)
    fail(ErrorKind::kUnsupported, from, ": cannot hard-link to '", to, "': ", std::strerror(err));
  fail_errno("cannot hard-link to '" + to + "'", from, err);
}

namespace {
class AnonymousRegion final : public MemoryRegion {
 public:
  AnonymousRegion(std::byte* base, size_t size) : base_(base), size_(size) {}
  ~AnonymousRegion() override { ::munmap(base_, size_); }
  std::byte* data() const override { return base_; }
  size_t size() const override { return size_; }

 private:
  std::byte* base_;
  size_t size_;
};
}  // namespace

std::unique_ptr<MemoryRegion> Env::allocate(size_t bytes, const std::string& what) {
  bytes = std::max<size_t>(bytes, 1);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fail(ErrorKind::kIO, "out of memory mapping ", bytes, " bytes for ", what);
  return std::make_unique<AnonymousRegion>(static_cast<std::byte*>(p), bytes);
}

bool is_temp_name_for(const std::string& name, const std::string& final_name) {
  return final_name_of_temp(name) == final_name && !final_name.empty();
}

std::string final_name_of_temp(const std::string& name) {
  // ".FINAL.tmp-PID-N"
  if (name.size() < 2 || name[0] != '.') return "";
  auto tmp = name.rfind(".tmp-");
  if (tmp == std::string::npos || tmp < 2) return "";
  std::string tail = name.substr(tmp + 5);
  auto dash = tail.find('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 == tail.size()) return "";
  for (size_t i = 0; i < tail.size(); ++i)
    if (i != dash && !std::isdigit(static_cast<unsigned char>(tail[i]))) return "";
  return name.substr(1, tmp - 1);
}

AtomicFile::AtomicFile(Env* env, std::string final_path, bool direct, bool create_only)
    : env_(env), final_path_(std::move(final_path)) {
  static std::atomic<unsigned> counter{0};
  if (env_->publishes_in_place(final_path_)) {
    in_place_ = true;
    temp_path_ = final_path_;
    file_ = env_->new_published_file(final_path_, !create_only, direct);
    return;
  }
  if (create_only && env_->file_exists(final_path_)) fail(ErrorKind::kIO, final_path_, ": not written: it exists");
  std::string dir = dirname_of(final_path_);
  std::string base = basename_of(final_path_);
  if (base.empty()) fail(ErrorKind::kInvalidArgument, final_path_, ": not a file name");
  for (int attempt = 0;; ++attempt) {
    temp_path_ = str_cat(dir, "/.", base, ".tmp-", ::getpid(), "-", counter++);
    try {
      file_ = env_->new_writable_file(temp_path_, direct);
      return;
    } catch (const Error&) {
      // A stale temp file of a dead process with our pid: try the next name.
      if (attempt >= 16 || !env_->file_exists(temp_path_)) throw;
    }
  }
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  file_.reset();  // closes (an object's upload: aborts)
  if (!in_place_) env_->remove_file(temp_path_);
}

void AtomicFile::commit(bool durable) {
  commit_without_dir_sync(durable);
  if (durable && !in_place_) env_->sync_dir(dirname_of(final_path_));
}

void AtomicFile::commit_without_dir_sync(bool durable) {
  if (durable) file_->sync();
  file_->close();
  if (!in_place_) env_->rename_file(temp_path_, final_path_);
  committed_ = true;
}

}  // namespace ckpt::io

namespace ckpt {

std::string read_text_file(const std::string& path) {
  return io::Env::Default()->read_file(path);
}

void write_text_file(const std::string& path, const std::string& text) {
  io::AtomicFile f(io::Env::Default(), path);
  f.file().append(text.data(), text.size());
  f.commit();
}

}  // namespace ckpt
