#include "io/s3/client.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <random>
#include <thread>

#include "util/crc32.h"
#include "util/errors.h"

namespace ckpt::io::s3 {

namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string xml_unescape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    auto semi = s.find(';', i);
    if (semi == std::string::npos || semi - i > 10) {
      out += s[i];
      continue;
    }
    std::string ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") {
      out += '&';
    } else if (ent == "lt") {
      out += '<';
    } else if (ent == "gt") {
      out += '>';
    } else if (ent == "quot") {
      out += '"';
    } else if (ent == "apos") {
      out += '\'';
    } else if (!ent.empty() && ent[0] == '#') {
      unsigned long cp = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X')
                             ? std::strtoul(ent.c_str() + 2, nullptr, 16)
                             : std::strtoul(ent.c_str() + 1, nullptr, 10);
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    } else {
      out += s.substr(i, semi - i + 1);
    }
    i = semi;
  }
  return out;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else
      out += c;
  }
  return out;
}

// Finds the next element named `name` (any namespace prefix) at or after `from`: the position
// of its '<' and of the end of its start tag; npos when none.
std::pair<size_t, size_t> find_start(const std::string& xml, const std::string& name, size_t from) {
  for (size_t pos = xml.find('<', from); pos != std::string::npos; pos = xml.find('<', pos + 1)) {
    size_t close = xml.find('>', pos);
    if (close == std::string::npos) return {std::string::npos, 0};
    std::string tag = xml.substr(pos + 1, close - pos - 1);
    if (tag.empty() || tag[0] == '/' || tag[0] == '?' || tag[0] == '!') continue;
    size_t end = tag.find_first_of(" \t\r\n/");
    std::string tname = tag.substr(0, end);
    auto colon = tname.find(':');
    if (colon != std::string::npos) tname = tname.substr(colon + 1);
    if (tname == name) return {pos, close + 1};
  }
  return {std::string::npos, 0};
}

size_t find_end(const std::string& xml, const std::string& name, size_t from) {
  for (size_t pos = xml.find("</", from); pos != std::string::npos; pos = xml.find("</", pos + 2)) {
    size_t close = xml.find('>', pos);
    if (close == std::string::npos) return std::string::npos;
    std::string tname = xml.substr(pos + 2, close - pos - 2);
    auto colon = tname.find(':');
    if (colon != std::string::npos) tname = tname.substr(colon + 1);
    if (tname == name) return pos;
  }
  return std::string::npos;
}

// Codes S3 sends for conditions that pass (its own advice: retry with backoff).
bool retryable_code(const std::string& code) {
  return code == "SlowDown" || code == "RequestTimeout" || code == "InternalError" || code == "ServiceUnavailable" ||
         code == "Throttling" || code == "ThrottlingException" || code == "RequestTimeTooSkewed" ||
         code == "ServiceUnavailableError";
}

bool retryable_curl(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_BAD_CONTENT_ENCODING:
      return true;
    default:
      return false;
  }
}

std::once_flag g_curl_init;

struct Transfer {
  const Request* req = nullptr;
  // request body
  size_t sent = 0;
  std::exception_ptr source_error;  // thrown by Request::body_source
  // response
  long status = 0;
  std::map<std::string, std::string> headers;
  std::string body;  // to a string: Request::dst null, or an error answer
  size_t received = 0;
  bool overflow = false;
  Stats* stats = nullptr;

  bool to_dst() const { return req->dst != nullptr && status >= 200 && status < 300; }
};

size_t on_read(char* buf, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t room = size * nitems;
  size_t left = t->req->body_size - t->sent;
  size_t n = std::min(room, left);
  if (t->req->body_source) {
    try {
      n = n ? t->req->body_source(buf, n) : 0;
    } catch (...) {
      t->source_error = std::current_exception();
      return CURL_READFUNC_ABORT;
    }
  } else if (n) {
    std::memcpy(buf, static_cast<const char*>(t->req->body) + t->sent, n);
  }
  t->sent += n;
  t->stats->bytes_sent += n;
  return n;
}

int on_seek(void* user, curl_off_t offset, int origin) {
  auto* t = static_cast<Transfer*>(user);
  if (t->req->body_source) return offset == static_cast<curl_off_t>(t->sent) ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_CANTSEEK;
  if (origin != SEEK_SET || offset < 0 || static_cast<size_t>(offset) > t->req->body_size) return CURL_SEEKFUNC_FAIL;
  t->sent = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

size_t on_header(char* buf, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nitems;
  std::string line(buf, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after 100 Continue, say): start over
    t->headers.clear();
    auto sp = line.find(' ');
    t->status = sp == std::string::npos ? 0 : std::strtol(line.c_str() + sp + 1, nullptr, 10);
    return n;
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string value = line.substr(colon + 1);
    size_t b = value.find_first_not_of(" \t");
    t->headers[lower(line.substr(0, colon))] = b == std::string::npos ? "" : value.substr(b);
  }
  return n;
}

size_t on_write(char* buf, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nitems;
  t->stats->bytes_received += n;
  if (t->to_dst()) {
    if (n > t->req->dst_size - t->received) {
      t->overflow = true;
      return 0;  // more than was asked for: abort
    }
    std::memcpy(static_cast<char*>(t->req->dst) + t->received, buf, n);
    t->received += n;
    return n;
  }
  const size_t cap = t->req->dst ? size_t{1} << 16 : t->req->max_body;
  if (t->body.size() + n > cap) {
    t->overflow = true;
    return 0;
  }
  t->body.append(buf, n);
  return n;
}

struct HandleGuard {
  CURL* h;
  struct curl_slist* headers = nullptr;
  ~HandleGuard() {
    if (headers) curl_slist_free_all(headers);
  }
};

std::string seconds_text(Clock::duration d) {
  double s = std::chrono::duration<double>(d).count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

}  // namespace

std::vector<std::string> xml_blocks(const std::string& xml, const std::string& name) {
  std::vector<std::string> out;
  size_t from = 0;
  for (;;) {
    auto [start, inner] = find_start(xml, name, from);
    if (start == std::string::npos) break;
    if (xml[inner - 2] == '/') {  // <Name/>
      out.emplace_back();
      from = inner;
      continue;
    }
    size_t end = find_end(xml, name, inner);
    if (end == std::string::npos) break;
    out.push_back(xml.substr(inner, end - inner));
    from = end + 1;
  }
  return out;
}

std::vector<std::string> xml_values(const std::string& xml, const std::string& name) {
  std::vector<std::string> out;
  for (auto& b : xml_blocks(xml, name)) out.push_back(xml_unescape(b));
  return out;
}

namespace {
std::string first_value(const std::string& xml, const std::string& name) {
  auto v = xml_values(xml, name);
  return v.empty() ? std::string() : v.front();
}
}  // namespace

Client::Client(Config config) : config_(std::move(config)) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURLSH* share = curl_share_init();
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  share_ = share;
}

Client::~Client() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
  curl_share_cleanup(static_cast<CURLSH*>(share_));
}

void* Client::take_handle() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  CURL* h = curl_easy_init();
  if (!h) fail(ErrorKind::kIO, "s3: out of memory creating a libcurl handle");
  return h;
}

void Client::give_handle(void* h) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(h);
}

Response Client::perform(const Request& req) {
  const Uri uri{req.bucket, req.key};
  const std::string what = str_cat("s3 ", req.op, " ", uri.str());
  const Url url = object_url(config_, req.bucket, req.key, req.query);
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(config_.request_deadline_s);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string& secret_hint = config_.credentials.access_key_id.empty()
                                       ? std::string(
                                             " (no credentials: set AWS_ACCESS_KEY_ID and "
                                             "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
                                       : str_cat(" (credentials from ", config_.credentials.source, ")");

  std::string last_failure;
  for (int attempt = 1;; ++attempt) {
    ++stats_.requests;
    Transfer t;
    t.req = &req;
    t.stats = &stats_;
    CURL* h = static_cast<CURL*>(take_handle());
    HandleGuard guard{h};
    curl_easy_reset(h);
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_SHARE, static_cast<CURLSH*>(share_));
    curl_easy_setopt(h, CURLOPT_URL, url.url.c_str());
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, config_.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, config_.stall_timeout_s);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    // Larger buffers than libcurl's 16 KiB / 64 KiB: a GB-sized transfer in fewer reads, writes
    // and callbacks.
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L << 10);
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
    if (!config_.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, config_.ca_bundle.c_str());
    struct curl_slist* connect_to = nullptr;
    for (const auto& c : config_.connect_to) connect_to = curl_slist_append(connect_to, c.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
    std::string sigv4 = "aws:amz:" + config_.region + ":s3";
    if (!config_.credentials.access_key_id.empty()) {
      curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str());
      curl_easy_setopt(h, CURLOPT_USERNAME, config_.credentials.access_key_id.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, config_.credentials.secret_access_key.c_str());
    }
    auto add = [&](const std::string& line) { guard.headers = curl_slist_append(guard.headers, line.c_str()); };
    bool has_hash = false;
    for (const auto& kv : req.headers) has_hash = has_hash || lower(kv.first) == "x-amz-content-sha256";
    if (!has_hash) add("x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (!config_.credentials.session_token.empty()) add("X-Amz-Security-Token: " + config_.credentials.session_token);
    // No "Expect:" line to suppress 100-continue: libcurl would sign it as a header ("expect:")
    // without sending it, and every server would compute another signature. Instead the body
    // follows the header at once: waiting for a "100 Continue" that servers like moto never send
    // cost this wait on every part (libcurl's default is 1 s).
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    bool has_type = false;
    for (const auto& [k, v] : req.headers) {
      add(k + ": " + v);
      if (lower(k) == "content-type") has_type = true;
    }
    const std::string method = req.method;
    if (method == "PUT") {
      curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
      curl_easy_setopt(h, CURLOPT_READDATA, &t);
      curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
      curl_easy_setopt(h, CURLOPT_SEEKDATA, &t);
      curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body_size));
      if (!has_type) add("Content-Type: application/octet-stream");
    } else if (method == "POST") {
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body_size ? static_cast<const char*>(req.body) : "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body_size));
      if (!has_type) add("Content-Type: application/xml");
    } else if (method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, guard.headers);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);

    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, nullptr);
    if (connect_to) curl_slist_free_all(connect_to);
    curl_easy_setopt(h, CURLOPT_SHARE, nullptr);
    give_handle(h);

    if (t.source_error) std::rethrow_exception(t.source_error);
    bool retry = false;
    std::string failure;
    ErrorKind kind = ErrorKind::kIO;
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && t.overflow && !t.to_dst())) {
      if (rc == CURLE_WRITE_ERROR && t.overflow) {
        failure = str_cat("the server sent more than the ", req.dst_size, " bytes asked for");
      } else {
        failure = str_cat(rc == CURLE_OPERATION_TIMEDOUT ? "timed out" : "cannot reach", " ", config_.endpoint, " (",
                          errbuf[0] ? errbuf : curl_easy_strerror(rc), ")");
        retry = retryable_curl(rc);
      }
    } else if (t.overflow) {
      failure = str_cat("the answer is over ", req.max_body, " bytes");
    } else {
      Response resp;
      resp.status = status;
      resp.headers = std::move(t.headers);
      resp.received = t.received;
      resp.body = std::move(t.body);
      const bool accepted = std::find(req.accept.begin(), req.accept.end(), status) != req.accept.end();
      const bool ok_status = status >= 200 && status < 300;
      // S3 may answer 200 and still report an error in the body (CompleteMultipartUpload).
      const bool error_body = ok_status &&
                              (std::strcmp(req.op, "CompleteMultipartUpload") == 0 ||
                               std::strcmp(req.op, "CopyObject") == 0) &&
                              find_start(resp.body, "Error", 0).first != std::string::npos;
      if (accepted || (ok_status && !error_body)) {
        if (ok_status && req.dst && resp.received != req.dst_size) {
          failure = str_cat("the body ended after ", resp.received, " of ", req.dst_size, " bytes");
          retry = true;
        } else {
          return resp;
        }
      } else {
        std::string code = first_value(resp.body, "Code");
        std::string message = first_value(resp.body, "Message");
        std::string request_id = first_value(resp.body, "RequestId");
        if (request_id.empty()) request_id = resp.header("x-amz-request-id");
        if (code.empty()) {
          code = status == 404 ? "NotFound" : status == 403 ? "Forbidden" : status == 412 ? "PreconditionFailed" : "";
        }
        failure = str_cat("HTTP ", status, code.empty() ? "" : " " + code,
                          message.empty() ? "" : ": " + printable(message, 200),
                          request_id.empty() ? "" : " (request id " + printable(request_id, 80) + ")");
        if (error_body) failure = "error in a 200 answer: " + failure;
        retry = status == 500 || status == 502 || status == 503 || status == 504 || retryable_code(code) ||
                (error_body && (code.empty() || retryable_code(code)));
        if (status == 404 || code == "NoSuchKey" || code == "NoSuchBucket" || code == "NoSuchUpload")
          kind = ErrorKind::kNotFound;
        if (status == 501 || status == 405) kind = ErrorKind::kUnsupported;
        if (status == 403 || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "AccessDenied")
          failure += secret_hint;
      }
    }
    if (!retry) fail(kind, what, ": ", failure);
    last_failure = failure;
    const long cap = std::min<long>(config_.retry_cap_ms, config_.retry_base_ms << std::min(attempt - 1, 20));
    const auto sleep =
        std::chrono::milliseconds(cap > 0 ? static_cast<long>(std::uniform_int_distribution<long>(0, cap)(rng)) : 0);
    if (attempt >= config_.max_attempts || Clock::now() + sleep > deadline || req.body_source)
      fail(kind, what, ": ", failure, " after ", attempt, attempt == 1 ? " attempt" : " attempts", " in ",
           seconds_text(Clock::now() - start));
    ++stats_.retries;
    std::this_thread::sleep_for(sleep);
  }
}

bool Client::head(const Uri& uri, ObjectInfo* info) {
  Request r;
  r.op = "HeadObject";
  r.method = "HEAD";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.accept = {404};
  Response resp = perform(r);
  if (resp.status == 404) return false;
  if (info) {
    info->key = uri.key;
    std::string len = resp.header("content-length");
    if (len.empty()) fail(ErrorKind::kIO, "s3 HeadObject ", uri.str(), ": the answer has no Content-Length");
    info->size = std::strtoull(len.c_str(), nullptr, 10);
    info->etag = resp.header("etag");
  }
  return true;
}

namespace {

// If-None-Match: * — written only when the key does not exist; a 412 is the answer "it exists".
void only_if_absent(Request* r) {
  r->headers.emplace_back("If-None-Match", "*");
  r->accept = {412};
}

// S3's x-amz-checksum-crc32: the body's CRC-32 (zlib's), 4 bytes big-endian, base64.
std::string checksum_crc32(const void* data, size_t size) {
  const uint32_t crc = crc32_update(0, data, size);
  const unsigned char b[4] = {static_cast<unsigned char>(crc >> 24), static_cast<unsigned char>(crc >> 16),
                              static_cast<unsigned char>(crc >> 8), static_cast<unsigned char>(crc)};
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out += kAlphabet[b[0] >> 2];
  out += kAlphabet[((b[0] & 3) << 4) | (b[1] >> 4)];
  out += kAlphabet[((b[1] & 15) << 2) | (b[2] >> 6)];
  out += kAlphabet[b[2] & 63];
  out += kAlphabet[b[3] >> 2];
  out += kAlphabet[(b[3] & 3) << 4];
  out += "==";
  return out;
}

// A PutObject of `size` bytes from `data`, with Content-Length (never chunked) and, unless
// switched off, the body's CRC-32 for the server to check.
Request put_request(const Config& config, const Uri& uri, const void* data, size_t size) {
  Request r;
  r.op = "PutObject";
  r.method = "PUT";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.body = data;
  r.body_size = size;
  r.has_body = true;
  if (config.send_checksums) r.headers.emplace_back("x-amz-checksum-crc32", checksum_crc32(data, size));
  return r;
}

}  // namespace

bool Client::put(const Uri& uri, const void* data, size_t size, bool if_none_match, std::string* etag) {
  Request r = put_request(config_, uri, data, size);
  if (if_none_match) only_if_absent(&r);
  Response resp = perform(r);
  if (resp.status == 412) return false;
  if (etag) *etag = resp.header("etag");
  return true;
}

bool Client::put_streamed(const Uri& uri, uint64_t size, std::function<size_t(char*, size_t)> source,
                          bool if_none_match) {
  Request r;
  r.op = "PutObject";
  r.method = "PUT";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.body_size = static_cast<size_t>(size);
  r.has_body = true;
  r.body_source = std::move(source);
  if (if_none_match) only_if_absent(&r);
  return perform(r).status != 412;
}

void Client::get_range(const Uri& uri, uint64_t offset, size_t n, void* dst, const std::string& etag) {
  if (n == 0) return;
  Request r;
  r.op = "GetObject";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.headers.emplace_back("Range", str_cat("bytes=", offset, "-", offset + n - 1));
  if (!etag.empty()) r.headers.emplace_back("If-Match", etag);
  r.dst = dst;
  r.dst_size = n;
  Response resp = perform(r);
  if (resp.status != 206)
    fail(ErrorKind::kIO, "s3 GetObject ", uri.str(), ": asked for bytes ", offset, "-", offset + n - 1, ", got HTTP ",
         resp.status, " instead of 206 Partial Content (the server ignored the range)");
  std::string cr = resp.header("content-range");
  unsigned long long a = 0, b = 0;
  if (std::sscanf(cr.c_str(), "bytes %llu-%llu/", &a, &b) != 2 || a != offset || b != offset + n - 1)
    fail(ErrorKind::kIO, "s3 GetObject ", uri.str(), ": asked for bytes ", offset, "-", offset + n - 1,
         ", the answer says Content-Range '", printable(cr, 80), "'");
}

std::string Client::get(const Uri& uri, std::string* etag) {
  Request r;
  r.op = "GetObject";
  r.bucket = uri.bucket;
  r.key = uri.key;
  Response resp = perform(r);
  if (etag) *etag = resp.header("etag");
  return std::move(resp.body);
}

bool Client::put_if_match(const Uri& uri, const void* data, size_t size, const std::string& expected,
                          std::string* etag) {
  Request r = put_request(config_, uri, data, size);
  r.headers.emplace_back("If-Match", expected);
  r.accept = {404, 412};
  Response resp = perform(r);
  if (resp.status == 404 || resp.status == 412) return false;
  if (etag) *etag = resp.header("etag");
  return true;
}

void Client::copy(const Uri& from, const Uri& to) {
  Request r;
  r.op = "CopyObject";
  r.method = "PUT";
  r.bucket = to.bucket;
  r.key = to.key;
  r.headers.emplace_back("x-amz-copy-source", "/" + from.bucket + "/" + uri_encode(from.key, true));
  r.has_body = true;
  perform(r);
}

void Client::remove(const Uri& uri) {
  Request r;
  r.op = "DeleteObject";
  r.method = "DELETE";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.accept = {404};
  perform(r);
}

std::vector<ObjectInfo> Client::list(const std::string& bucket, const std::string& prefix, const std::string& delimiter,
                                     std::vector<std::string>* prefixes) {
  std::vector<ObjectInfo> out;
  std::string token;
  for (int page = 0;; ++page) {
    Request r;
    r.op = "ListObjectsV2";
    r.bucket = bucket;
    r.query = {{"list-type", "2"}, {"prefix", prefix}};
    if (!delimiter.empty()) r.query.emplace_back("delimiter", delimiter);
    if (!token.empty()) r.query.emplace_back("continuation-token", token);
    Response resp = perform(r);
    for (const std::string& c : xml_blocks(resp.body, "Contents")) {
      ObjectInfo o;
      o.key = first_value(c, "Key");
      o.size = std::strtoull(first_value(c, "Size").c_str(), nullptr, 10);
      o.etag = first_value(c, "ETag");
      out.push_back(std::move(o));
    }
    if (prefixes)
      for (const std::string& c : xml_blocks(resp.body, "CommonPrefixes"))
        prefixes->push_back(first_value(c, "Prefix"));
    if (first_value(resp.body, "IsTruncated") != "true") break;
    std::string next = first_value(resp.body, "NextContinuationToken");
    if (next.empty() || next == token)
      fail(ErrorKind::kIO, "s3 ListObjectsV2 s3://", bucket, "/", prefix,
           ": the answer is truncated but has no new continuation token");
    token = next;
  }
  return out;
}

std::string Client::create_multipart(const Uri& uri) {
  Request r;
  r.op = "CreateMultipartUpload";
  r.method = "POST";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.query = {{"uploads", ""}};
  r.has_body = true;
  if (config_.send_checksums) r.headers.emplace_back("x-amz-checksum-algorithm", "CRC32");
  Response resp = perform(r);
  std::string id = first_value(resp.body, "UploadId");
  if (id.empty())
    fail(ErrorKind::kIO, "s3 CreateMultipartUpload ", uri.str(),
         ": the answer has no UploadId: ", printable(resp.body, 200));
  return id;
}

CompletedPart Client::upload_part(const Uri& uri, const std::string& upload_id, int part_number, const void* data,
                                  size_t size) {
  Request r;
  r.op = "UploadPart";
  r.method = "PUT";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}};
  r.body = data;
  r.body_size = size;
  r.has_body = true;
  CompletedPart part{part_number, "", ""};
  if (config_.send_checksums) {
    part.checksum_crc32 = checksum_crc32(data, size);
    r.headers.emplace_back("x-amz-checksum-crc32", part.checksum_crc32);
  }
  Response resp = perform(r);
  part.etag = resp.header("etag");
  if (part.etag.empty())
    fail(ErrorKind::kIO, "s3 UploadPart ", uri.str(), ": part ", part_number, ": the answer has no ETag");
  return part;
}

bool Client::complete_multipart(const Uri& uri, const std::string& upload_id,
                                const std::vector<CompletedPart>& parts, bool if_none_match) {
  std::string xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  for (const auto& p : parts)
    xml += str_cat("<Part>",
                   p.checksum_crc32.empty() ? "" : "<ChecksumCRC32>" + p.checksum_crc32 + "</ChecksumCRC32>",
                   "<ETag>", xml_escape(p.etag), "</ETag><PartNumber>", p.number, "</PartNumber></Part>");
  xml += "</CompleteMultipartUpload>";
  Request r;
  r.op = "CompleteMultipartUpload";
  r.method = "POST";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.query = {{"uploadId", upload_id}};
  r.body = xml.data();
  r.body_size = xml.size();
  r.has_body = true;
  if (if_none_match) only_if_absent(&r);
  Response resp = perform(r);
  if (resp.status == 412) return false;
  return true;
}

void Client::abort_multipart(const Uri& uri, const std::string& upload_id) {
  Request r;
  r.op = "AbortMultipartUpload";
  r.method = "DELETE";
  r.bucket = uri.bucket;
  r.key = uri.key;
  r.query = {{"uploadId", upload_id}};
  r.accept = {404};
  perform(r);
}

std::vector<UploadInfo> Client::list_multipart(const std::string& bucket, const std::string& prefix) {
  std::vector<UploadInfo> out;
  std::string key_marker, id_marker;
  for (;;) {
    Request r;
    r.op = "ListMultipartUploads";
    r.bucket = bucket;
    r.query = {{"uploads", ""}, {"prefix", prefix}};
    if (!key_marker.empty()) r.query.emplace_back("key-marker", key_marker);
    if (!id_marker.empty()) r.query.emplace_back("upload-id-marker", id_marker);
    Response resp = perform(r);
    for (const std::string& u : xml_blocks(resp.body, "Upload"))
      out.push_back(UploadInfo{first_value(u, "Key"), first_value(u, "UploadId")});
    if (first_value(resp.body, "IsTruncated") != "true") break;
    std::string nk = first_value(resp.body, "NextKeyMarker"), ni = first_value(resp.body, "NextUploadIdMarker");
    if (nk == key_marker && ni == id_marker)
      fail(ErrorKind::kIO, "s3 ListMultipartUploads s3://", bucket, "/", prefix,
           ": the answer is truncated but its markers do not advance");
    key_marker = nk;
    id_marker = ni;
  }
  return out;
}

std::shared_ptr<Client> default_client() {
  static std::mutex mu;
  static std::shared_ptr<Client> client;
  static std::string fingerprint;
  Config c = config_from_environment();
  std::string fp =
      c.fingerprint() + "|" +
      std::to_string(std::hash<std::string>{}(c.credentials.secret_access_key + "\n" + c.credentials.session_token));
  fp += str_cat("|", c.part_size, "|", c.parts_in_flight, "|", c.range_size, "|", c.ranges_in_flight, "|", c.send_checksums,
                "|", c.lease_s, "|", c.put_threshold);
  std::lock_guard<std::mutex> lock(mu);
  if (!client || fp != fingerprint) {
    client = std::make_shared<Client>(std::move(c));
    fingerprint = fp;
  }
  return client;
}

}  // namespace ckpt::io::s3
