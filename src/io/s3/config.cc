#include "io/s3/config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "util/errors.h"

namespace ckpt::io::s3 {

bool is_s3_uri(const std::string& path) {
  return path.size() >= 5 && path.compare(0, 5, "s3://") == 0;
}

Uri parse_uri(const std::string& uri, bool key_required) {
  if (!is_s3_uri(uri)) fail(ErrorKind::kInvalidArgument, "'", uri, "' is not an s3:// URI (s3://bucket/key)");
  std::string rest = uri.substr(5);
  auto slash = rest.find('/');
  Uri out;
  out.bucket = rest.substr(0, slash);
  out.key = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (out.bucket.empty()) fail(ErrorKind::kInvalidArgument, "'", uri, "': no bucket name (expected s3://bucket/key)");
  bool ok = out.bucket.size() >= 3 && out.bucket.size() <= 63;
  for (char c : out.bucket)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '.' ||
          c == '-'))
      ok = false;
  if (ok && (!std::isalnum(static_cast<unsigned char>(out.bucket.front())) ||
             !std::isalnum(static_cast<unsigned char>(out.bucket.back()))))
    ok = false;
  if (!ok)
    fail(ErrorKind::kInvalidArgument, "'", uri, "': '", out.bucket,
         "' is not a valid bucket name (3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter "
         "or digit)");
  if (key_required && out.key.empty())
    fail(ErrorKind::kInvalidArgument, "'", uri, "': no object key (expected s3://bucket/key)");
  if (out.key.size() > 1024)
    fail(ErrorKind::kInvalidArgument, "'", printable(uri), "': the key is ", out.key.size(),
         " bytes, S3 allows at most 1024");
  if (out.key.find('\0') != std::string::npos)
    fail(ErrorKind::kInvalidArgument, "'", printable(uri), "': the key contains a NUL byte");
  size_t start = 0;
  while (start <= out.key.size() && !out.key.empty()) {
    size_t end = out.key.find('/', start);
    if (end == std::string::npos) end = out.key.size();
    std::string seg = out.key.substr(start, end - start);
    if (seg == "." || seg == "..")
      fail(ErrorKind::kInvalidArgument, "'", printable(uri), "': the key has a '", seg,
           "' segment, which HTTP would resolve away (name the object without it)");
    start = end + 1;
  }
  return out;
}

namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// An AWS INI file: section name -> key -> value. A key with an empty value followed by indented
// lines opens a sub-section ("s3 =\n  addressing_style = path"), stored as "s3.addressing_style".
using Ini = std::map<std::string, std::map<std::string, std::string>>;

Ini parse_ini(const std::string& text) {
  Ini out;
  std::string section, nested;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[' && t.back() == ']') {
      section = trim(t.substr(1, t.size() - 2));
      nested.clear();
      out[section];
      continue;
    }
    auto eq = t.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    std::string key = lower(trim(t.substr(0, eq))), value = trim(t.substr(eq + 1));
    bool indented = std::isspace(static_cast<unsigned char>(line[0]));
    if (!indented) nested.clear();
    if (!indented && value.empty()) {
      nested = key;
      continue;
    }
    out[section][nested.empty() ? key : nested + "." + key] = value;
  }
  return out;
}

const std::string* find(const Ini& ini, const std::string& section, const std::string& key) {
  auto s = ini.find(section);
  if (s == ini.end()) return nullptr;
  auto k = s->second.find(key);
  return k == s->second.end() || k->second.empty() ? nullptr : &k->second;
}

long parse_number(const char* name, const char* value, long min, long max) {
  std::string v = trim(value);
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < min || n > max)
    fail(ErrorKind::kInvalidArgument, name, "='", printable(value), "': expected a whole number from ", min, " to ",
         max);
  return static_cast<long>(n);
}

std::string strip_slashes(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

std::string Config::fingerprint() const {
  return str_cat(endpoint, "|", region, "|", path_style, "|", ca_bundle, "|", credentials.access_key_id, "|",
                 credentials.source, "|", connect_timeout_ms, "|", stall_timeout_s, "|", max_attempts, "|",
                 retry_base_ms, "|", retry_cap_ms, "|", request_deadline_s);
}

Config config_from_environment(const GetEnv& getenv, const ReadFile& read_file) {
  auto env = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v ? std::string(v) : std::string();
  };
  Config c;
  const std::string home = env("HOME");
  std::string cred_path = env("AWS_SHARED_CREDENTIALS_FILE");
  if (cred_path.empty()) cred_path = home + "/.aws/credentials";
  std::string config_path = env("AWS_CONFIG_FILE");
  if (config_path.empty()) config_path = home + "/.aws/config";
  std::string profile = env("AWS_PROFILE");
  const bool explicit_profile = !profile.empty();
  if (profile.empty()) profile = "default";

  std::string text;
  Ini creds, conf;
  const bool have_creds = read_file(cred_path, &text);
  if (have_creds) creds = parse_ini(text);
  text.clear();
  const bool have_conf = read_file(config_path, &text);
  if (have_conf) conf = parse_ini(text);
  const std::string conf_section = profile == "default" ? "default" : "profile " + profile;
  if (explicit_profile && !creds.count(profile) && !conf.count(conf_section))
    fail(ErrorKind::kInvalidArgument, "AWS_PROFILE='", printable(profile), "': no [", printable(profile), "] in ",
         cred_path, " and no [", printable(conf_section), "] in ", config_path);
  auto conf_value = [&](const std::string& key) -> std::string {
    const std::string* v = find(conf, conf_section, key);
    return v ? *v : std::string();
  };

  // Credentials.
  Credentials& cr = c.credentials;
  if (!env("AWS_ACCESS_KEY_ID").empty() && !env("AWS_SECRET_ACCESS_KEY").empty()) {
    cr.access_key_id = env("AWS_ACCESS_KEY_ID");
    cr.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
    cr.session_token = env("AWS_SESSION_TOKEN");
    cr.source = "environment (AWS_ACCESS_KEY_ID)";
  } else if (find(creds, profile, "aws_access_key_id") && find(creds, profile, "aws_secret_access_key")) {
    cr.access_key_id = *find(creds, profile, "aws_access_key_id");
    cr.secret_access_key = *find(creds, profile, "aws_secret_access_key");
    if (auto* t = find(creds, profile, "aws_session_token")) cr.session_token = *t;
    cr.source = str_cat("profile '", profile, "' in ", cred_path);
  } else if (!conf_value("aws_access_key_id").empty() && !conf_value("aws_secret_access_key").empty()) {
    cr.access_key_id = conf_value("aws_access_key_id");
    cr.secret_access_key = conf_value("aws_secret_access_key");
    cr.session_token = conf_value("aws_session_token");
    cr.source = str_cat("profile '", profile, "' in ", config_path);
  } else {
    cr.source = "none (no AWS_ACCESS_KEY_ID, no profile '" + profile + "' with keys)";
  }

  // Region.
  c.region = env("AWS_REGION");
  if (c.region.empty()) c.region = env("AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = conf_value("region");
  if (c.region.empty()) c.region = "us-east-1";

  // Endpoint and addressing.
  std::string endpoint = env("AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = env("AWS_ENDPOINT_URL");
  if (endpoint.empty()) endpoint = conf_value("s3.endpoint_url");
  if (endpoint.empty()) endpoint = conf_value("endpoint_url");
  if (!endpoint.empty()) {
    endpoint = strip_slashes(trim(endpoint));
    if (endpoint.rfind("http://", 0) != 0 && endpoint.rfind("https://", 0) != 0)
      fail(ErrorKind::kInvalidArgument, "S3 endpoint '", printable(endpoint), "' must start with http:// or https://");
    if (endpoint.find('/', endpoint.find("//") + 2) != std::string::npos)
      fail(ErrorKind::kInvalidArgument, "S3 endpoint '", printable(endpoint),
           "' has a path; give scheme://host[:port] only");
    c.endpoint = endpoint;
    c.custom_endpoint = true;
    c.path_style = true;
  } else {
    c.endpoint = "https://s3." + c.region + ".amazonaws.com";
    c.path_style = false;
  }
  std::string style = lower(conf_value("s3.addressing_style"));
  if (style == "path") c.path_style = true;
  if (style == "virtual") c.path_style = false;

  c.ca_bundle = env("AWS_CA_BUNDLE");
  if (c.ca_bundle.empty()) c.ca_bundle = conf_value("ca_bundle");

  // ckpt's knobs.
  auto number = [&](const char* name, long min, long max, auto* field) {
    const char* v = getenv(name);
    if (v && *v) *field = static_cast<std::remove_pointer_t<decltype(field)>>(parse_number(name, v, min, max));
  };
  number("CKPT_S3_CONNECT_TIMEOUT_MS", 1, 600000, &c.connect_timeout_ms);
  number("CKPT_S3_STALL_TIMEOUT_S", 1, 86400, &c.stall_timeout_s);
  number("AWS_MAX_ATTEMPTS", 1, 100, &c.max_attempts);
  number("CKPT_S3_MAX_ATTEMPTS", 1, 100, &c.max_attempts);
  number("CKPT_S3_RETRY_BASE_MS", 0, 600000, &c.retry_base_ms);
  number("CKPT_S3_RETRY_CAP_MS", 0, 3600000, &c.retry_cap_ms);
  number("CKPT_S3_REQUEST_DEADLINE_S", 1, 86400, &c.request_deadline_s);
  number("CKPT_S3_LEASE_S", 2, 86400, &c.lease_s);
  long part = 0, parts = 0, range = 0, ranges = 0;
  number("CKPT_S3_PART_SIZE", 5L << 20, 5L << 30, &part);
  number("CKPT_S3_PARTS_IN_FLIGHT", 1, 256, &parts);
  number("CKPT_S3_RANGE_SIZE", 64L << 10, 5L << 30, &range);
  number("CKPT_S3_RANGES_IN_FLIGHT", 1, 256, &ranges);
  long put_threshold = 0;
  number("CKPT_S3_PUT_THRESHOLD", 0, 5L << 30, &put_threshold);
  c.put_threshold = static_cast<uint64_t>(put_threshold);
  if (part) c.part_size = static_cast<uint64_t>(part);
  if (parts) c.parts_in_flight = static_cast<size_t>(parts);
  if (range) c.range_size = static_cast<uint64_t>(range);
  if (ranges) c.ranges_in_flight = static_cast<size_t>(ranges);
  const std::string checksum = lower(env("CKPT_S3_CHECKSUM"));
  if (checksum == "none")
    c.send_checksums = false;
  else if (!checksum.empty() && checksum != "crc32")
    fail(ErrorKind::kInvalidArgument, "CKPT_S3_CHECKSUM='", printable(checksum), "': expected crc32 or none");
  return c;
}

Config config_from_environment() {
  return config_from_environment([](const char* name) { return std::getenv(name); },
                                 [](const std::string& path, std::string* out) {
                                   std::ifstream in(path, std::ios::binary);
                                   if (!in) return false;
                                   std::ostringstream ss;
                                   ss << in.rdbuf();
                                   *out = ss.str();
                                   return true;
                                 });
}

std::string uri_encode(const std::string& s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string canonical_query(std::vector<std::pair<std::string, std::string>> query) {
  for (auto& [k, v] : query) {
    k = uri_encode(k, false);
    v = uri_encode(v, false);
  }
  std::sort(query.begin(), query.end());
  std::string out;
  for (const auto& [k, v] : query) out += (out.empty() ? "" : "&") + k + "=" + v;
  return out;
}

Url object_url(const Config& config, const std::string& bucket, const std::string& key,
               const std::vector<std::pair<std::string, std::string>>& query) {
  const std::string& ep = config.endpoint;
  auto scheme_end = ep.find("://");
  std::string scheme = ep.substr(0, scheme_end), host = ep.substr(scheme_end + 3);
  Url u;
  std::string path;
  if (config.path_style || bucket.find('.') != std::string::npos) {
    u.host = host;
    path = "/" + uri_encode(bucket, false) + (key.empty() ? "" : "/" + uri_encode(key, true));
  } else {
    u.host = bucket + "." + host;
    path = "/" + uri_encode(key, true);
  }
  u.url = scheme + "://" + u.host + path;
  std::string q = canonical_query(query);
  if (!q.empty()) u.url += "?" + q;
  return u;
}

}  // namespace ckpt::io::s3
