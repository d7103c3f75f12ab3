// The routing half of the object seam: RoutingEnv sends s3:// paths to the object writer
// (object_writer.cc), reader (object_reader.cc) and lease (lease.cc), every other path to POSIX.
#include "io/s3/object_env.h"

#include <limits>
#include <string>
#include <vector>

#include "io/s3/lease.h"
#include "util/errors.h"

namespace ckpt::io::s3 {

namespace {

// The keys "in" directory `u` start with this ("runs/7/"; "" for a whole bucket).
std::string dir_prefix(const Uri& u) {
  return u.key.empty() || u.key.back() == '/' ? u.key : u.key + "/";
}

class RoutingEnv final : public EnvWrapper {
 public:
  explicit RoutingEnv(Env* local) : EnvWrapper(local) {}

  std::unique_ptr<WritableFile> new_writable_file(const std::string& path, bool direct) override {
    if (!is_s3_uri(path)) return target()->new_writable_file(path, direct);
    return new_object_writer(default_client(), path);
  }
  std::unique_ptr<WritableFile> new_published_file(const std::string& path, bool replace, bool direct) override {
    if (!is_s3_uri(path)) return target()->new_published_file(path, replace, direct);
    return new_object_writer(default_client(), path, /*if_none_match=*/!replace);
  }
  std::shared_ptr<MappedFile> map_file(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->map_file(path);
    return open_object(default_client(), path);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->rename_file(from, to);
    fail(ErrorKind::kUnsupported, from, ": object storage has no rename (", to, ")");
  }
  void remove_file(const std::string& path) noexcept override {
    if (!is_s3_uri(path)) return target()->remove_file(path);
    try {
      default_client()->remove(parse_uri(path));
    } catch (...) {
    }
  }
  void sync_dir(const std::string& dir) override {
    if (!is_s3_uri(dir)) target()->sync_dir(dir);
  }
  bool file_exists(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->file_exists(path);
    return default_client()->head(parse_uri(path), nullptr);
  }
  std::vector<DirEntry> list_dir(const std::string& dir) override {
    if (!is_s3_uri(dir)) return target()->list_dir(dir);
    Uri u = parse_uri(dir, false);
    const std::string prefix = dir_prefix(u);
    std::vector<std::string> prefixes;
    std::vector<DirEntry> out;
    for (const auto& o : default_client()->list(u.bucket, prefix, "/", &prefixes))
      out.push_back(DirEntry{o.key.substr(prefix.size()), true});
    for (const auto& p : prefixes) {
      std::string name = p.substr(prefix.size());
      if (!name.empty() && name.back() == '/') name.pop_back();
      out.push_back(DirEntry{name, false});
    }
    return out;
  }
  void create_dirs(const std::string& dir) override {
    if (!is_s3_uri(dir)) target()->create_dirs(dir);
  }
  std::unique_ptr<FileLock> lock_file(const std::string& path, const std::string& owner) override {
    if (!is_s3_uri(path)) return target()->lock_file(path, owner);
    return acquire_lease(default_client(), path, owner);
  }
  uint64_t free_space(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->free_space(path);
    return std::numeric_limits<uint64_t>::max();
  }
  uint64_t file_size(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->file_size(path);
    ObjectInfo info;
    if (!default_client()->head(parse_uri(path), &info)) fail(ErrorKind::kNotFound, path, ": no such object");
    return info.size;
  }
  std::string read_file(const std::string& path) override {
    if (!is_s3_uri(path)) return target()->read_file(path);
    return default_client()->get(parse_uri(path));
  }
  void link_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->link_file(from, to);
    fail(ErrorKind::kUnsupported, from, ": object storage has no links");
  }
  bool publishes_in_place(const std::string& path) override {
    return is_s3_uri(path) || target()->publishes_in_place(path);
  }
  void copy_file(const std::string& from, const std::string& to) override {
    if (!is_s3_uri(from) && !is_s3_uri(to)) return target()->copy_file(from, to);
    if (!is_s3_uri(from) || !is_s3_uri(to))
      fail(ErrorKind::kUnsupported, from, ": no server-side copy between a file and an object (to ", to, ")");
    ObjectInfo info;
    auto client = default_client();
    if (!client->head(parse_uri(from), &info)) fail(ErrorKind::kNotFound, from, ": no such object");
    if (info.size > (uint64_t{5} << 30))
      fail(ErrorKind::kUnsupported, from, ": ", info.size, " bytes, over CopyObject's 5 GiB");
    client->copy(parse_uri(from), parse_uri(to));
  }
  // Multipart uploads under DIR/ (ListMultipartUploads, then AbortMultipartUpload each). A
  // server without these calls (405/501) has nothing to abort that ckpt could find.
  size_t abort_unfinished_writes(const std::string& dir) override {
    if (!is_s3_uri(dir)) return target()->abort_unfinished_writes(dir);
    Uri u = parse_uri(dir, false);
    const std::string prefix = dir_prefix(u);
    auto client = default_client();
    std::vector<UploadInfo> uploads;
    try {
      uploads = client->list_multipart(u.bucket, prefix);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kUnsupported) return 0;
      throw;
    }
    for (const auto& up : uploads) client->abort_multipart(Uri{u.bucket, up.key}, up.upload_id);
    return uploads.size();
  }
};

}  // namespace

Env* routing_env(Env* local) {
  static RoutingEnv env(local);
  return &env;
}

}  // namespace ckpt::io::s3
