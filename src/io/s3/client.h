// An S3 client on libcurl, signed by libcurl's own AWS Signature V4 (CURLOPT_AWS_SIGV4).
//
// libcurl 7.88 signs the URL exactly as it is handed, so every request goes out canonical
// (config.h: object_url, canonical_query); x-amz-content-sha256 and X-Amz-Security-Token are set
// explicitly, so they are signed too. Request bodies come from memory, which makes every request
// retryable as a whole. Every PutObject and UploadPart carries x-amz-checksum-crc32 (the body's
// CRC-32, computed by ISA-L at memory speed): a server that checks it refuses bytes altered on the
// way (400 BadDigest) instead of storing them (Config::send_checksums turns this off).
//
// Failures. Transient ones are retried (Config: max_attempts, full-jitter exponential backoff,
// a per-request deadline): connection refused/reset, DNS, timeouts (connect, stall), a body cut
// short, HTTP 500/502/503/504, S3 codes SlowDown, RequestTimeout, InternalError, and an <Error>
// in a 200 answer to CompleteMultipartUpload. Everything else (4xx) fails at once. Either way
// the caller gets one ckpt::Error with a one-line message:
//   "s3 PutObject s3://bucket/key: HTTP 403 SignatureDoesNotMatch: <server's message> (request id R)"
//   "s3 GetObject s3://bucket/key: cannot reach http://127.0.0.1:9 (Couldn't connect to server) after 5 attempts in 1.6
//   s"
// kind: kNotFound for 404 / NoSuchKey / NoSuchBucket / NoSuchUpload, kUnsupported for 501 and
// 405, kIO otherwise. No message ever holds a secret (the secret key, the session token, an
// Authorization header) — only the operation, the URI, the status, S3's code and its <Message>.
// Thread safety: every method may be called from many threads at once; connections are pooled.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "io/s3/config.h"

namespace ckpt::io::s3 {

using Query = std::vector<std::pair<std::string, std::string>>;
using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  const char* op = "";  // the S3 API name, for messages: "PutObject"
  const char* method = "GET";
  std::string bucket, key;
  Query query;
  Headers headers;
  // The body sent (PUT, POST): not owned, must outlive the call.
  const void* body = nullptr;
  size_t body_size = 0;
  bool has_body = false;
  // A PUT body produced while it is sent (body_size bytes in all): fills up to n bytes at `dst`
  // and returns how many, blocking until it has some; 0 only at the end, a throw to abort. A
  // streamed body cannot be sent twice, so such a request gets one attempt.
  std::function<size_t(char* dst, size_t n)> body_source;
  // Where a GET's body goes: into `dst` (exactly dst_size bytes expected; more is an error, fewer
  // is retried as a cut-short body) or, when dst is null, into Response::body (at most
  // max_body bytes).
  void* dst = nullptr;
  size_t dst_size = 0;
  size_t max_body = size_t{64} << 20;
  // Statuses that are answers, not failures (e.g. 404 for an existence check, 412 for a
  // conditional write): returned to the caller instead of thrown.
  std::vector<long> accept;
};

struct Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  size_t received = 0;                         // body bytes written to Request::dst
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  std::string etag;
};

// A part uploaded: what CompleteMultipartUpload lists.
struct CompletedPart {
  int number = 0;
  std::string etag;
  std::string checksum_crc32;  // base64, as sent with the part; empty when checksums are off
};

struct UploadInfo {
  std::string key;
  std::string upload_id;
};

// Counters a test or a benchmark reads to see what went over the wire.
struct Stats {
  std::atomic<uint64_t> requests{0}, retries{0}, bytes_sent{0}, bytes_received{0};
};

class Client {
 public:
  explicit Client(Config config);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Config& config() const { return config_; }
  Stats& stats() { return stats_; }

  // One request with retries; throws ckpt::Error as described above.
  Response perform(const Request& request);

  // --- objects
  // HEAD: nullopt-like `found` = false on 404.
  bool head(const Uri& uri, ObjectInfo* info);
  // PUT of `size` bytes with Content-Length. `if_none_match`: only when the key does not exist
  // (If-None-Match: *); returns false on 412 (the key exists) instead of throwing.
  bool put(const Uri& uri, const void* data, size_t size, bool if_none_match = false, std::string* etag = nullptr);
  // One PUT of exactly `size` bytes pulled from `source` while they are sent (Request::
  // body_source): no retry, no checksum header (the CRC is known only at the end). Returns false
  // on 412 when `if_none_match` and the key exists.
  bool put_streamed(const Uri& uri, uint64_t size, std::function<size_t(char*, size_t)> source,
                    bool if_none_match = false);
  // GET of [offset, offset+n) into dst, checked against Content-Range; `etag` (when not empty)
  // pins the version (If-Match): an object replaced meanwhile fails with HTTP 412.
  void get_range(const Uri& uri, uint64_t offset, size_t n, void* dst, const std::string& etag = "");
  // A whole small object (index, pointer); `etag` receives its ETag.
  std::string get(const Uri& uri, std::string* etag = nullptr);
  // PUT only when the object's current ETag is `expected` (If-Match: compare-and-swap). Returns
  // false on 412 (replaced meanwhile) and 404 (gone). Servers without conditional writes ignore
  // the header and always write (doc/object-storage.md).
  bool put_if_match(const Uri& uri, const void* data, size_t size, const std::string& expected,
                    std::string* etag = nullptr);
  // A server-side copy (CopyObject, objects up to 5 GiB): `to` appears whole, its bytes never
  // leave the server. Its 200 body is checked for an <Error>, as Complete's.
  void copy(const Uri& from, const Uri& to);
  // DELETE; a missing key is fine (S3 answers 204 either way).
  void remove(const Uri& uri);
  // ListObjectsV2 under `prefix`, every page (continuation tokens). With `delimiter`, the
  // common prefixes go into `prefixes`.
  std::vector<ObjectInfo> list(const std::string& bucket, const std::string& prefix, const std::string& delimiter = "",
                               std::vector<std::string>* prefixes = nullptr);

  // --- multipart uploads
  // Declares CRC32 as the upload's checksum (x-amz-checksum-algorithm) unless checksums are off.
  std::string create_multipart(const Uri& uri);
  // Sends the part with its CRC-32; returns its number, ETag and checksum for Complete.
  CompletedPart upload_part(const Uri& uri, const std::string& upload_id, int part_number, const void* data,
                            size_t size);
  // Parts in order. Returns false on 412 when `if_none_match` and the key exists.
  bool complete_multipart(const Uri& uri, const std::string& upload_id, const std::vector<CompletedPart>& parts,
                          bool if_none_match = false);
  void abort_multipart(const Uri& uri, const std::string& upload_id);
  // Uploads in progress under `prefix` (ListMultipartUploads, every page).
  std::vector<UploadInfo> list_multipart(const std::string& bucket, const std::string& prefix);

 private:
  struct Handle;
  Config config_;
  Stats stats_;
  std::mutex mu_;
  std::vector<void*> idle_;  // CURL* handles whose connections stay open
  void* share_ = nullptr;    // CURLSH*: DNS cache shared across handles

  void* take_handle();
  void give_handle(void* h);
};

// The client for the process's current environment (config_from_environment()), shared while
// the settings stay the same; a changed environment (another endpoint, other keys) gets a new one.
std::shared_ptr<Client> default_client();

// XML helpers, by local element name (servers differ in namespaces): the text of every
// <name>...</name> in `xml`, entities decoded; and the inner text of each <name> block.
std::vector<std::string> xml_values(const std::string& xml, const std::string& name);
std::vector<std::string> xml_blocks(const std::string& xml, const std::string& name);

}  // namespace ckpt::io::s3
