// The S3 client without an S3 server: URIs, the AWS configuration conventions, canonical URLs,
// libcurl's SigV4 signatures against AWS's published example and a reference signer, and the
// retry/error rules against a scripted HTTP server on 127.0.0.1 (503s, resets, cut-short bodies,
// stalls, an <Error> in a 200). Servers that speak S3 (moto) are driven by tests/s3/test_s3.py.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/error.h"
#include "format/zip.h"
#include "io/s3/client.h"
#include "io/s3/config.h"
#include "io/s3/lease.h"
#include "io/s3/object_env.h"

namespace ckpt::io::s3 {
namespace {

// --- URIs ------------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

TEST(S3Uri, ParsesBucketAndKey) {
  Uri u = parse_uri("s3://my-bucket/run 1/step=100 é.ckpt");
  EXPECT_EQ(u.bucket, "my-bucket");
  EXPECT_EQ(u.key, "run 1/step=100 é.ckpt");
  EXPECT_EQ(u.str(), "s3://my-bucket/run 1/step=100 é.ckpt");
  EXPECT_EQ(parse_uri("s3://b.c-d/", false).key, "");
  EXPECT_TRUE(is_s3_uri("s3://x"));
  EXPECT_FALSE(is_s3_uri("s3:/x"));
  EXPECT_FALSE(is_s3_uri("/tmp/s3://x"));
}

TEST(S3Uri, RefusesMalformedWithOneLine) {
  for (const char* bad : {"s3://", "s3:///k", "s3://b/../k", "s3://bb/a/./k", "s3://bb/a/..", "s3://Bad_Bucket/k",
                          "s3://bucket", "s3://bucket/", "s3://-bucket/k", "s3://ab/k"}) {
    ErrorKind kind{};
    std::string msg = error_of([&] { parse_uri(bad); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << bad;
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([] { parse_uri("s3:///k"); }).find("no bucket"), std::string::npos);
  EXPECT_NE(error_of([] { parse_uri("s3://bkt/../k"); }).find("'..' segment"), std::string::npos);
}

// --- configuration -----------------------------------------------------------------------------

struct FakeEnv {
  std::map<std::string, std::string> vars;
  std::map<std::string, std::string> files;
  Config config() const {
    return config_from_environment(
        [this](const char* n) -> const char* {
          auto it = vars.find(n);
          return it == vars.end() ? nullptr : it->second.c_str();
        },
        [this](const std::string& p, std::string* out) {
          auto it = files.find(p);
          if (it == files.end()) return false;
          *out = it->second;
          return true;
        });
  }
};

TEST(S3Config, DefaultsToAwsVirtualHosted) {
  FakeEnv e;
  e.vars["HOME"] = "/home/u";
  Config c = e.config();
  EXPECT_EQ(c.region, "us-east-1");
  EXPECT_EQ(c.endpoint, "https://s3.us-east-1.amazonaws.com");
  EXPECT_FALSE(c.path_style);
  EXPECT_TRUE(c.credentials.access_key_id.empty());
  EXPECT_EQ(object_url(c, "bkt", "a/b c").url, "https://bkt.s3.us-east-1.amazonaws.com/a/b%20c");
  EXPECT_EQ(object_url(c, "bkt", "a/b c").host, "bkt.s3.us-east-1.amazonaws.com");
  // Dotted buckets cannot be virtual-hosted over TLS (the certificate's wildcard covers one label).
  EXPECT_EQ(object_url(c, "b.k.t", "k").url, "https://s3.us-east-1.amazonaws.com/b.k.t/k");
}

TEST(S3Config, EnvironmentBeatsProfileAndFiles) {
  FakeEnv e;
  e.vars = {{"HOME", "/h"},
            {"AWS_ACCESS_KEY_ID", "AKENV"},
            {"AWS_SECRET_ACCESS_KEY", "skenv"},
            {"AWS_SESSION_TOKEN", "tok"},
            {"AWS_REGION", "eu-west-3"},
            {"AWS_DEFAULT_REGION", "us-west-2"},
            {"AWS_ENDPOINT_URL", "http://other:1"},
            {"AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000/"}};
  e.files["/h/.aws/credentials"] = "[default]\naws_access_key_id = AKFILE\naws_secret_access_key = skfile\n";
  Config c = e.config();
  EXPECT_EQ(c.credentials.access_key_id, "AKENV");
  EXPECT_EQ(c.credentials.secret_access_key, "skenv");
  EXPECT_EQ(c.credentials.session_token, "tok");
  EXPECT_EQ(c.region, "eu-west-3");
  EXPECT_EQ(c.endpoint, "http://127.0.0.1:9000");
  EXPECT_TRUE(c.path_style);
  EXPECT_EQ(object_url(c, "bkt", "k").url, "http://127.0.0.1:9000/bkt/k");
  e.vars.erase("AWS_REGION");
  e.vars.erase("AWS_ENDPOINT_URL_S3");
  c = e.config();
  EXPECT_EQ(c.region, "us-west-2");
  EXPECT_EQ(c.endpoint, "http://other:1");
}

TEST(S3Config, ProfileFromCredentialsAndConfigFiles) {
  FakeEnv e;
  e.vars = {{"HOME", "/h"},
            {"AWS_PROFILE", "train"},
            {"AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"},
            {"AWS_CONFIG_FILE", "/etc/conf"}};
  e.files["/etc/creds"] =
      "# comment\n[default]\naws_access_key_id=AKDEF\naws_secret_access_key=skdef\n"
      "[train]\r\naws_access_key_id = AKTRAIN\r\naws_secret_access_key = sktrain\r\naws_session_token = st\r\n";
  e.files["/etc/conf"] =
      "[default]\nregion = ap-south-1\n[profile train]\nregion = eu-central-1\ns3 =\n"
      "  endpoint_url = http://minio.local:9000\n  addressing_style = virtual\n";
  Config c = e.config();
  EXPECT_EQ(c.credentials.access_key_id, "AKTRAIN");
  EXPECT_EQ(c.credentials.secret_access_key, "sktrain");
  EXPECT_EQ(c.credentials.session_token, "st");
  EXPECT_NE(c.credentials.source.find("profile 'train' in /etc/creds"), std::string::npos);
  EXPECT_EQ(c.region, "eu-central-1");
  EXPECT_EQ(c.endpoint, "http://minio.local:9000");
  EXPECT_FALSE(c.path_style);  // addressing_style = virtual overrides the custom endpoint's path-style
  // Keys only in the config file's profile section.
  e.files.erase("/etc/creds");
  e.files["/etc/conf"] = "[profile train]\naws_access_key_id = AKC\naws_secret_access_key = skc\n";
  c = e.config();
  EXPECT_EQ(c.credentials.access_key_id, "AKC");
  EXPECT_EQ(c.region, "us-east-1");
  // A profile nobody defines is an error, not a silent fallback to anonymous.
  e.vars["AWS_PROFILE"] = "nope";
  std::string msg = error_of([&] { e.config(); });
  EXPECT_NE(msg.find("AWS_PROFILE='nope'"), std::string::npos) << msg;
}

TEST(S3Config, KnobsAreCheckedNumbers) {
  FakeEnv e;
  e.vars = {
      {"HOME", "/h"}, {"CKPT_S3_PART_SIZE", "8388608"}, {"AWS_MAX_ATTEMPTS", "2"}, {"CKPT_S3_STALL_TIMEOUT_S", "7"}};
  Config c = e.config();
  EXPECT_EQ(c.part_size, 8388608u);
  EXPECT_EQ(c.max_attempts, 2);
  EXPECT_EQ(c.stall_timeout_s, 7);
  e.vars["CKPT_S3_PART_SIZE"] = "1000";  // below S3's 5 MiB minimum
  EXPECT_NE(error_of([&] { e.config(); }).find("CKPT_S3_PART_SIZE='1000'"), std::string::npos);
  e.vars["CKPT_S3_PART_SIZE"] = "8M";
  EXPECT_NE(error_of([&] { e.config(); }).find("whole number"), std::string::npos);
  e.vars.erase("CKPT_S3_PART_SIZE");
  EXPECT_TRUE(e.config().send_checksums);
  e.vars["CKPT_S3_CHECKSUM"] = "NONE";
  EXPECT_FALSE(e.config().send_checksums);
  e.vars["CKPT_S3_CHECKSUM"] = "md5";
  EXPECT_NE(error_of([&] { e.config(); }).find("CKPT_S3_CHECKSUM='md5': expected crc32 or none"), std::string::npos);
  e.vars.erase("CKPT_S3_CHECKSUM");
  e.vars["AWS_ENDPOINT_URL"] = "127.0.0.1:9000";
  EXPECT_NE(error_of([&] { e.config(); }).find("http:// or https://"), std::string::npos);
}

// --- canonical URLs ----------------------------------------------------------------------------

TEST(S3Url, EncodesAsSigV4Wants) {
  EXPECT_EQ(uri_encode("a-b_c.d~e", false), "a-b_c.d~e");
  EXPECT_EQ(uri_encode("run 1/step=100 é+x", true), "run%201/step%3D100%20%C3%A9%2Bx");
  EXPECT_EQ(uri_encode("run1/", false), "run1%2F");
  EXPECT_EQ(canonical_query({{"uploads", ""}}), "uploads=");
  EXPECT_EQ(canonical_query({{"max-keys", "3"}, {"list-type", "2"}, {"prefix", "run1/"}}),
            "list-type=2&max-keys=3&prefix=run1%2F");
  EXPECT_EQ(canonical_query({{"uploadId", "a+b"}, {"partNumber", "10"}}), "partNumber=10&uploadId=a%2Bb");
  EXPECT_EQ(canonical_query({{"continuation-token", "1/ab=="}, {"list-type", "2"}}),
            "continuation-token=1%2Fab%3D%3D&list-type=2");
}

// --- a scripted HTTP server ----------------------------------------------------------------------

// Answers each connection's requests with the next scripted action; records what it received.
class ScriptServer {
 public:
  enum class Act { kReply, kReset, kStall, kTruncate };
  struct Step {
    Act act = Act::kReply;
    std::string status = "200 OK";
    std::string body;
    std::string extra_headers;
    int echo = -1;  // >= 0: the reply's body is the body of the request with this index
  };

  explicit ScriptServer(std::vector<Step> steps) : steps_(std::move(steps)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  std::vector<Step> steps_;
  size_t next_ = 0;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;

  static bool read_request(int c, std::string* out) {
    std::string data;
    char buf[65536];
    size_t header_end = std::string::npos;
    while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t r = ::recv(c, buf, sizeof buf, 0);
      if (r <= 0) return false;
      data.append(buf, static_cast<size_t>(r));
    }
    std::smatch m;
    std::string head = data.substr(0, header_end);
    size_t want = 0;
    if (std::regex_search(head, m, std::regex("\r\n[Cc]ontent-[Ll]ength: *([0-9]+)"))) want = std::stoul(m[1]);
    while (data.size() < header_end + 4 + want) {
      ssize_t r = ::recv(c, buf, sizeof buf, 0);
      if (r <= 0) return false;
      data.append(buf, static_cast<size_t>(r));
    }
    *out = data.substr(0, header_end + 4 + want);  // head and body
    return true;
  }

  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      while (!stop_ && read_request(c, &req)) {
        Step s = next_ < steps_.size() ? steps_[next_++] : Step{};
        {
          std::lock_guard<std::mutex> lock(mu_);
          requests_.push_back(req);
        }
        if (s.act == Act::kReset) {
          linger l{1, 0};  // RST, not FIN
          ::setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
          break;
        }
        if (s.act == Act::kStall) {
          while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          break;
        }
        if (s.echo >= 0) {
          std::lock_guard<std::mutex> lock(mu_);
          const std::string& r = requests_.at(static_cast<size_t>(s.echo));
          s.body = r.substr(r.find("\r\n\r\n") + 4);
        }
        std::string resp = "HTTP/1.1 " + s.status + "\r\nContent-Length: " + std::to_string(s.body.size()) + "\r\n" +
                           s.extra_headers + "\r\n";
        resp += s.act == Act::kTruncate ? s.body.substr(0, s.body.size() / 2) : s.body;
        ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
        if (s.act == Act::kTruncate) break;
      }
      ::close(c);
    }
  }
};

Config local_config(int port) {
  Config c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(port);
  c.custom_endpoint = true;
  c.path_style = true;
  c.credentials.access_key_id = "AKIDEXAMPLE";
  c.credentials.secret_access_key = "SECRET/with+chars";
  c.credentials.session_token = "SESSIONTOKEN";
  c.credentials.source = "test";
  c.retry_base_ms = 1;
  c.retry_cap_ms = 5;
  c.max_attempts = 4;
  c.connect_timeout_ms = 2000;
  c.stall_timeout_s = 1;
  return c;
}

std::string header_of(const std::string& req, const std::string& name) {
  std::smatch m;
  if (std::regex_search(req, m, std::regex("\r\n" + name + ": ([^\r]*)", std::regex::icase))) return m[1];
  return "";
}

// --- SigV4 -------------------------------------------------------------------------------------

std::string hex(const unsigned char* p, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += k[p[i] >> 4];
    s += k[p[i] & 15];
  }
  return s;
}
std::string sha256_hex(const std::string& s) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d);
  return hex(d, sizeof d);
}
std::string hmac(const std::string& key, const std::string& msg) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), d, &n);
  return std::string(reinterpret_cast<char*>(d), n);
}

// AWS's algorithm, written from its documentation (S3 flavour: the path is not encoded twice),
// over the request line and headers as the server received them.
std::string reference_signature(const std::string& req, const std::string& secret, const std::string& region) {
  std::string line = req.substr(0, req.find("\r\n"));
  std::smatch m;
  std::regex_match(line, m, std::regex("([A-Z]+) ([^? ]*)[?]?([^ ]*) HTTP/1.1"));
  std::string method = m[1], path = m[2], query = m[3];
  std::string auth = header_of(req, "Authorization");
  std::regex_search(auth, m, std::regex("SignedHeaders=([^,]+)"));
  std::string signed_headers = m[1];
  std::string canon_headers;
  for (size_t b = 0; b <= signed_headers.size();) {
    size_t e = signed_headers.find(';', b);
    if (e == std::string::npos) e = signed_headers.size();
    std::string name = signed_headers.substr(b, e - b);
    canon_headers += name + ":" + header_of(req, name) + "\n";
    b = e + 1;
  }
  std::string date = header_of(req, "x-amz-date");
  std::string creq = method + "\n" + path + "\n" + query + "\n" + canon_headers + "\n" + signed_headers + "\n" +
                     header_of(req, "x-amz-content-sha256");
  std::string scope = date.substr(0, 8) + "/" + region + "/s3/aws4_request";
  std::string sts = "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + sha256_hex(creq);
  std::string k = hmac(hmac(hmac(hmac("AWS4" + secret, date.substr(0, 8)), region), "s3"), "aws4_request");
  std::string sig = hmac(k, sts);
  return hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
}

std::string signature_of(const std::string& req) {
  std::smatch m;
  std::string auth = header_of(req, "Authorization");
  return std::regex_search(auth, m, std::regex("Signature=([0-9a-f]+)")) ? std::string(m[1]) : "";
}

TEST(S3SigV4, MatchesAwsPublishedExample) {
  // "GET Object" example of the SigV4 documentation (examplebucket, 20130524, Range bytes=0-9).
  ScriptServer server({ScriptServer::Step{ScriptServer::Act::kReply, "206 Partial Content", "0123456789",
                                          "Content-Range: bytes 0-9/100\r\n"}});
  Config c;
  c.endpoint = "http://s3.amazonaws.com";
  c.path_style = false;
  c.region = "us-east-1";
  c.credentials.access_key_id = "AKIAIOSFODNN7EXAMPLE";
  c.credentials.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
  c.connect_to = {"examplebucket.s3.amazonaws.com:80:127.0.0.1:" + std::to_string(server.port())};
  Client client(c);
  Request r;
  r.op = "GetObject";
  r.bucket = "examplebucket";
  r.key = "test.txt";
  r.headers = {{"Range", "bytes=0-9"},
               {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
               {"x-amz-date", "20130524T000000Z"}};
  client.perform(r);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(signature_of(server.requests()[0]), "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
      << server.requests()[0];
}

TEST(S3SigV4, TrickyKeysAndQueriesSignCanonically) {
  std::vector<ScriptServer::Step> steps(8);
  for (auto& s : steps) s.body = "<x/>";
  ScriptServer server(steps);
  Client client(local_config(server.port()));
  auto get = [&](const std::string& key, Query q) {
    Request r;
    r.op = "Test";
    r.bucket = "ckpt";
    r.key = key;
    r.query = std::move(q);
    client.perform(r);
  };
  get("run 1/step=100 é.ckpt", {});
  get("a=b", {});
  get("a~b_c-d.e+f%g", {});
  get("", {{"max-keys", "3"}, {"list-type", "2"}, {"prefix", "run1/"}});
  get("k.bin", {{"uploadId", "a+b/c="}, {"partNumber", "10"}});
  get("k.bin", {{"uploads", ""}});
  get("", {{"list-type", "2"}, {"continuation-token", "1/ab=="}});
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 7u);
  for (const auto& req : reqs) {
    SCOPED_TRACE(req.substr(0, req.find("\r\n")));
    EXPECT_EQ(signature_of(req), reference_signature(req, "SECRET/with+chars", "us-east-1"));
    EXPECT_EQ(header_of(req, "X-Amz-Security-Token"), "SESSIONTOKEN");
    EXPECT_NE(header_of(req, "Authorization").find("x-amz-security-token"), std::string::npos);  // signed
    EXPECT_EQ(header_of(req, "x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
  }
  EXPECT_EQ(reqs[0].substr(0, reqs[0].find("\r\n")), "GET /ckpt/run%201/step%3D100%20%C3%A9.ckpt HTTP/1.1");
  EXPECT_EQ(reqs[3].substr(0, reqs[3].find("\r\n")), "GET /ckpt?list-type=2&max-keys=3&prefix=run1%2F HTTP/1.1");
  EXPECT_EQ(reqs[5].substr(0, reqs[5].find("\r\n")), "GET /ckpt/k.bin?uploads= HTTP/1.1");
}

// --- retries and errors --------------------------------------------------------------------------

using Act = ScriptServer::Act;
ScriptServer::Step reply(std::string status, std::string body = "", std::string headers = "") {
  return ScriptServer::Step{Act::kReply, std::move(status), std::move(body), std::move(headers)};
}

TEST(S3Retry, TransientFailuresAreRetriedThenSucceed) {
  ScriptServer server({reply("503 Slow Down", "<Error><Code>SlowDown</Code></Error>"),
                       reply("500 Internal Server Error"), ScriptServer::Step{Act::kReset},
                       reply("200 OK", "", "ETag: \"abc\"\r\n")});
  Client client(local_config(server.port()));
  std::string body(1000, 'x'), etag;
  ASSERT_TRUE(client.put(parse_uri("s3://ckpt/k"), body.data(), body.size(), false, &etag));
  EXPECT_EQ(etag, "\"abc\"");
  // libcurl itself retries a request whose reused connection was reset before any answer.
  EXPECT_GE(client.stats().retries.load(), 2u);
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 4u);
  for (const auto& r : reqs) {
    EXPECT_EQ(header_of(r, "Content-Length"), "1000");  // never chunked
    EXPECT_EQ(header_of(r, "Transfer-Encoding"), "");
  }
}

TEST(S3Retry, ClientErrorsFailAtOnceWithOneLineAndNoSecret) {
  ScriptServer server({reply("403 Forbidden",
                             "<?xml version=\"1.0\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request "
                             "signature we calculated does not match</Message><RequestId>RID1</RequestId></Error>")});
  Client client(local_config(server.port()));
  std::string body = "x";
  ErrorKind kind{};
  std::string msg = error_of([&] { client.put(parse_uri("s3://ckpt/dir/k.pt"), body.data(), 1); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kIO);
  EXPECT_EQ(server.requests().size(), 1u);
  EXPECT_NE(msg.find("s3 PutObject s3://ckpt/dir/k.pt: HTTP 403 SignatureDoesNotMatch: The request signature"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("RID1"), std::string::npos);
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(msg.find("SECRET"), std::string::npos);
  EXPECT_EQ(msg.find("SESSIONTOKEN"), std::string::npos);
}

TEST(S3Retry, NotFoundIsItsKind) {
  ScriptServer server({reply("404 Not Found",
                             "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not "
                             "exist</Message></Error>")});
  Client client(local_config(server.port()));
  ErrorKind kind{};
  std::string msg = error_of([&] { client.get(parse_uri("s3://nobucket/k")); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kNotFound);
  EXPECT_NE(msg.find("HTTP 404 NoSuchBucket"), std::string::npos) << msg;
}

// Every upload carries its CRC-32 for the server to check (AWS answers 400 BadDigest to a
// mismatch; the local servers do not check, so the value is checked here against a known answer).
TEST(S3Checksums, PutsAndPartsCarryTheirCrc32AndCompleteListsThem) {
  ScriptServer server({reply("200 OK", "", "ETag: \"p\"\r\n"),
                       reply("200 OK", "<InitiateMultipartUploadResult><UploadId>UP</UploadId></InitiateMultipartUploadResult>"),
                       reply("200 OK", "", "ETag: \"e1\"\r\n"),
                       reply("200 OK", "<CompleteMultipartUploadResult><ETag>\"x-1\"</ETag></CompleteMultipartUploadResult>")});
  Client client(local_config(server.port()));
  const std::string body = "123456789";  // CRC-32 0xCBF43926: base64 of CB F4 39 26
  ASSERT_TRUE(client.put(parse_uri("s3://ckpt/k"), body.data(), body.size()));
  const Uri uri = parse_uri("s3://ckpt/m");
  const std::string id = client.create_multipart(uri);
  CompletedPart part = client.upload_part(uri, id, 1, body.data(), body.size());
  EXPECT_EQ(part.checksum_crc32, "y/Q5Jg==");
  EXPECT_EQ(part.etag, "\"e1\"");
  ASSERT_TRUE(client.complete_multipart(uri, id, {part}));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(header_of(reqs[0], "x-amz-checksum-crc32"), "y/Q5Jg==");
  EXPECT_NE(header_of(reqs[0], "Authorization").find("x-amz-checksum-crc32"), std::string::npos);  // signed
  EXPECT_EQ(header_of(reqs[1], "x-amz-checksum-algorithm"), "CRC32");
  EXPECT_EQ(header_of(reqs[2], "x-amz-checksum-crc32"), "y/Q5Jg==");
  EXPECT_NE(reqs[3].find("<Part><ChecksumCRC32>y/Q5Jg==</ChecksumCRC32><ETag>\"e1\"</ETag><PartNumber>1</PartNumber>"
                         "</Part>"),
            std::string::npos)
      << reqs[3];
  // Switched off (CKPT_S3_CHECKSUM=none), for a server that refuses the header: none is sent.
  ScriptServer server2({reply("200 OK", "", "ETag: \"q\"\r\n")});
  Config c = local_config(server2.port());
  c.send_checksums = false;
  Client plain(c);
  ASSERT_TRUE(plain.put(parse_uri("s3://ckpt/k"), body.data(), body.size()));
  ASSERT_EQ(server2.requests().size(), 1u);
  EXPECT_EQ(header_of(server2.requests()[0], "x-amz-checksum-crc32"), "");
}

// A save's progress counts what the server has acknowledged, not what was handed to the upload
// buffers (which run parts_in_flight parts ahead).
TEST(S3Progress, CountsAcknowledgedPartsOnly) {
  const std::string etag_header = "ETag: \"e\"\r\n";
  ScriptServer server({reply("200 OK", "<InitiateMultipartUploadResult><UploadId>UP</UploadId></InitiateMultipartUploadResult>"),
                       reply("200 OK", "", etag_header), reply("200 OK", "", etag_header),
                       reply("200 OK", "", etag_header), reply("200 OK", "", etag_header),
                       reply("200 OK", "<CompleteMultipartUploadResult><ETag>\"x-4\"</ETag></CompleteMultipartUploadResult>")});
  Config c = local_config(server.port());
  c.part_size = 5 << 20;
  c.parts_in_flight = 1;  // the script server answers one connection at a time
  c.stall_timeout_s = 10;
  auto client = std::make_shared<Client>(c);
  auto file = new_object_writer(client, "s3://ckpt/big.pt");
  const std::string payload(18 << 20, 'p');
  std::vector<std::pair<uint64_t, size_t>> reports;  // (reported, parts the server had answered)
  {
    zip::Writer w(file.get());
    w.set_progress(
        [&](uint64_t done, uint64_t) {
          size_t parts = 0;
          for (const auto& r : server.requests()) parts += r.find("partNumber=") != std::string::npos;
          reports.emplace_back(done, parts);
        },
        payload.size());
    w.add("archive/data/0", payload.data(), payload.size());
    w.finish();
  }
  file->close();
  ASSERT_FALSE(reports.empty());
  for (const auto& [done, parts] : reports) EXPECT_LE(done, parts * c.part_size) << parts << " parts answered";
  EXPECT_EQ(file->acknowledged(), file->size());
}

// A size announced up front (CKPT_S3_PUT_THRESHOLD): one PUT streamed from the part buffers, in
// order, whatever order the writer threads fill them in; a size other than announced fails.
TEST(S3Streamed, OnePutOfTheAnnouncedSizeInOrder) {
  ScriptServer server({reply("200 OK", "", "ETag: \"s\"\r\n")});
  Config c = local_config(server.port());
  c.part_size = 5 << 20;
  c.parts_in_flight = 2;
  c.put_threshold = uint64_t{1} << 30;
  c.stall_timeout_s = 10;
  auto client = std::make_shared<Client>(c);
  std::string data(23 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + (i >> 20));
  {
    auto file = new_object_writer(client, "s3://ckpt/one.pt");
    file->expect_size(data.size());
    // Two writers, each taking every other 1 MiB slice, as the zip writer's threads do.
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w)
      writers.emplace_back([&, w] {
        for (size_t off = size_t(w) << 20; off < data.size(); off += size_t{2} << 20)
          file->write_at(off, data.data() + off, std::min<size_t>(1 << 20, data.size() - off));
      });
    for (auto& t : writers) t.join();
    file->close();
    EXPECT_EQ(file->acknowledged(), data.size());
  }
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].substr(0, reqs[0].find("\r\n")), "PUT /ckpt/one.pt HTTP/1.1");
  EXPECT_EQ(header_of(reqs[0], "Content-Length"), std::to_string(data.size()));
  EXPECT_EQ(reqs[0].substr(reqs[0].find("\r\n\r\n") + 4), data);
  // Fewer bytes than announced: close fails naming both; nothing more is sent.
  ScriptServer idle({});
  Config c2 = local_config(idle.port());
  c2.part_size = 5 << 20;
  c2.put_threshold = uint64_t{1} << 30;
  auto file = new_object_writer(std::make_shared<Client>(c2), "s3://ckpt/short.pt");
  file->expect_size(12 << 20);
  file->append(data.data(), 11 << 20);
  std::string msg = error_of([&] { file->close(); });
  EXPECT_NE(msg.find("11534336 bytes written of the 12582912 announced"), std::string::npos) << msg;
}

TEST(S3Retry, ErrorInsideA200CompleteIsRetried) {
  ScriptServer server({reply("200 OK",
                             "<?xml version=\"1.0\"?>\n\n<Error><Code>InternalError</Code><Message>We "
                             "encountered an internal error</Message></Error>"),
                       reply("200 OK",
                             "<CompleteMultipartUploadResult><ETag>\"e-2\"</ETag>"
                             "</CompleteMultipartUploadResult>")});
  Client client(local_config(server.port()));
  EXPECT_TRUE(client.complete_multipart(parse_uri("s3://ckpt/k"), "UP", {{1, "\"a\""}, {2, "\"b\""}}));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].substr(0, reqs[0].find("\r\n")), "POST /ckpt/k?uploadId=UP HTTP/1.1");
}

TEST(S3Retry, CutShortBodiesAreRetriedAndNeverAccepted) {
  std::string data(100, 'a');
  ScriptServer server(
      {ScriptServer::Step{Act::kTruncate, "206 Partial Content", data, "Content-Range: bytes 0-99/1000\r\n"},
       reply("206 Partial Content", data, "Content-Range: bytes 0-99/1000\r\n")});
  Client client(local_config(server.port()));
  std::string dst(100, '\0');
  client.get_range(parse_uri("s3://ckpt/k"), 0, 100, dst.data());
  EXPECT_EQ(dst, data);
  EXPECT_EQ(server.requests().size(), 2u);
  // Every attempt cut short: an error, never the partial bytes.
  ScriptServer bad(std::vector<ScriptServer::Step>(
      8, ScriptServer::Step{Act::kTruncate, "206 Partial Content", data, "Content-Range: bytes 0-99/1000\r\n"}));
  Client client2(local_config(bad.port()));
  std::string msg = error_of([&] { client2.get_range(parse_uri("s3://ckpt/k"), 0, 100, dst.data()); });
  EXPECT_NE(msg.find("after 4 attempts"), std::string::npos) << msg;
}

TEST(S3Retry, WrongContentRangeIsRefused) {
  ScriptServer server({reply("206 Partial Content", std::string(10, 'a'), "Content-Range: bytes 10-19/100\r\n")});
  Client client(local_config(server.port()));
  std::string dst(10, '\0');
  std::string msg = error_of([&] { client.get_range(parse_uri("s3://ckpt/k"), 0, 10, dst.data()); });
  EXPECT_NE(msg.find("Content-Range 'bytes 10-19/100'"), std::string::npos) << msg;
}

TEST(S3Retry, ServerDownFailsWithinTheBound) {
  int port;
  {
    ScriptServer gone({});
    port = gone.port();
  }
  Client client(local_config(port));
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { client.head(parse_uri("s3://ckpt/k"), nullptr); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 2.0);
  EXPECT_NE(msg.find("s3 HeadObject s3://ckpt/k: cannot reach http://127.0.0.1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("after 4 attempts"), std::string::npos) << msg;
}

TEST(S3Retry, StalledServerTimesOut) {
  ScriptServer server(std::vector<ScriptServer::Step>(4, ScriptServer::Step{Act::kStall}));
  Config c = local_config(server.port());
  c.max_attempts = 2;
  Client client(c);
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { client.get(parse_uri("s3://ckpt/k")); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 1.5);  // two attempts of a 1 s stall timeout
  EXPECT_LT(s, 6.0);
  EXPECT_NE(msg.find("timed out"), std::string::npos) << msg;
}

// --- the lease's read-back (step 3 of lease.h) ---------------------------------------------------

// A server that answers a PUT before its bytes can be read (s3rver; an eventually consistent
// store) first returns the lease empty: it is read again until the writer's own token is there.
TEST(S3Lease, AnEmptyReadBackIsReadAgain) {
  const std::string etag = "ETag: \"l1\"\r\n";
  ScriptServer::Step echo_lease = reply("200 OK", "", etag);
  echo_lease.echo = 0;
  ScriptServer server({reply("200 OK", "", etag),  // 0: the create-only PUT
                       reply("200 OK", "", etag), reply("200 OK", "", etag),  // 1, 2: read back empty
                       echo_lease,                                            // 3: then the lease
                       reply("412 Precondition Failed", "<Error><Code>PreconditionFailed</Code></Error>"),  // probe
                       echo_lease, reply("204 No Content")});  // release: read, then delete
  auto client = std::make_shared<Client>(local_config(server.port()));
  {
    auto lease = acquire_lease(client, "s3://ckpt/run/.lock", "pid 1 on test");
    EXPECT_EQ(lease->caveat(), "");  // the probe's 412: conditional writes are honoured
    lease->check();
  }
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 7u);
  EXPECT_EQ(reqs[0].rfind("PUT /ckpt/run/.lock ", 0), 0u) << reqs[0];
  EXPECT_EQ(header_of(reqs[0], "If-None-Match"), "*");
  for (int i : {1, 2, 3}) EXPECT_EQ(reqs[i].rfind("GET /ckpt/run/.lock ", 0), 0u) << reqs[i];
  EXPECT_EQ(header_of(reqs[4], "If-None-Match"), "*");  // the probe
  EXPECT_EQ(reqs[6].rfind("DELETE /ckpt/run/.lock ", 0), 0u) << reqs[6];
}

// One that never returns what it stored fails in about a second with one line saying so, not as
// a race with another writer and not after waiting on forever.
TEST(S3Lease, ALeaseThatNeverReadsBackFailsWithinTheBound) {
  ScriptServer server({reply("200 OK", "", "ETag: \"l1\"\r\n")});  // then every GET: 200, empty
  auto client = std::make_shared<Client>(local_config(server.port()));
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { acquire_lease(client, "s3://ckpt/run/.lock", "pid 1 on test"); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 5.0);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find("s3://ckpt/run/.lock: the lease this process wrote still reads back empty"), std::string::npos)
      << msg;
  // The PUT, the first read, 20 more, and the release's read (nothing of ours to delete).
  EXPECT_EQ(server.requests().size(), 23u);
}

// Another writer's token in the read-back (a server without conditional writes, two writers
// racing) fails naming that writer.
TEST(S3Lease, AnotherWritersTokenInTheReadBackFails) {
  ScriptServer server({reply("200 OK", "", "ETag: \"l1\"\r\n"),
                       reply("200 OK", "ckpt-lease/1\nowner: pid 7 on elsewhere\ntoken: 00ff\nexpires_unix: 4e9\n",
                             "ETag: \"l2\"\r\n")});
  auto client = std::make_shared<Client>(local_config(server.port()));
  std::string msg = error_of([&] { acquire_lease(client, "s3://ckpt/run/.lock", "pid 1 on test"); });
  EXPECT_NE(msg.find("s3://ckpt/run/.lock: leased by another writer (pid 7 on elsewhere; it wrote the lease right "
                     "after this process did"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace ckpt::io::s3
