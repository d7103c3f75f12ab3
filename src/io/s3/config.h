// Object-storage addressing and configuration: `s3://bucket/key` URIs, the AWS conventions for
// credentials, region and endpoint, and the canonical request URLs libcurl's SigV4 signer needs.
// Torch-free and curl-free (the client is in client.h). doc/object-storage.md is the user guide.
//
// Where each setting comes from, first match wins (as botocore does it):
//   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else the profile
//                (AWS_PROFILE, else "default") in the credentials file ([name]), else in the config
//                file ([profile name]; [default] for the default profile)
//   files        AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials),
//                AWS_CONFIG_FILE (default ~/.aws/config)
//   region       AWS_REGION, AWS_DEFAULT_REGION, the profile's `region`, "us-east-1"
//   endpoint     AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's `s3 = endpoint_url`, its
//                `endpoint_url`, else AWS: https://s3.REGION.amazonaws.com
//   addressing   path-style (http://host/bucket/key) for a custom endpoint, virtual-hosted
//                (https://bucket.host/key) for AWS; the profile's `s3 = addressing_style`
//                (path/virtual) overrides; buckets with dots are always path-style
//   CA bundle    AWS_CA_BUNDLE, the profile's `ca_bundle`
// ckpt's own knobs (timeouts, retries, part sizes) are CKPT_S3_* variables, listed at Config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ckpt::io::s3 {

// "s3://bucket/key". Every path ckpt takes goes to object storage when it starts with "s3://".
bool is_s3_uri(const std::string& path);

struct Uri {
  std::string bucket;
  std::string key;  // may be empty ("s3://bucket" or "s3://bucket/"): a bucket or prefix
  std::string str() const { return "s3://" + bucket + (key.empty() ? "" : "/" + key); }
};

// Parses an s3:// URI. Throws kInvalidArgument with a one-line reason for: a missing bucket
// ("s3://", "s3:///k"), a bucket name S3 would refuse (3-63 of a-z 0-9 . -, starting and ending
// alphanumeric), and a key with "." or ".." segments ("s3://b/../k": HTTP clients and servers
// resolve them, so the object written would not be the one named) or NUL bytes.
// `key_required`: the key must be non-empty (an object, not a bucket).
Uri parse_uri(const std::string& uri, bool key_required = true);

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never printed, never in a message
  std::string session_token;      // never printed
  std::string source;             // where they came from, for messages: "environment", "profile 'x' in FILE"
};

struct Config {
  Credentials credentials;
  std::string region = "us-east-1";
  std::string endpoint;  // scheme://host[:port], no trailing slash
  bool custom_endpoint = false;
  bool path_style = false;
  std::string ca_bundle;

  // Timeouts: nothing ckpt does against a server waits unboundedly.
  long connect_timeout_ms = 5000;  // CKPT_S3_CONNECT_TIMEOUT_MS: TCP + TLS handshake
  long stall_timeout_s = 30;       // CKPT_S3_STALL_TIMEOUT_S: a transfer with no byte moved this long fails
  // Retries of transient failures (connection errors, timeouts, 500/502/503/504, SlowDown,
  // RequestTimeout, an <Error> in a 200 Complete): full-jitter exponential backoff,
  // sleep = random(0, min(retry_cap_ms, retry_base_ms * 2^attempt)).
  int max_attempts = 5;           // AWS_MAX_ATTEMPTS, CKPT_S3_MAX_ATTEMPTS: tries per request (1 = no retry)
  long retry_base_ms = 100;       // CKPT_S3_RETRY_BASE_MS
  long retry_cap_ms = 20000;      // CKPT_S3_RETRY_CAP_MS
  long request_deadline_s = 600;  // CKPT_S3_REQUEST_DEADLINE_S: no retry starts after this (per request)
  // Transfers.
  uint64_t part_size = uint64_t{16} << 20;  // CKPT_S3_PART_SIZE: multipart part (>= 5 MiB); smaller objects: one PUT
  // A save whose size is known up front (ckpt::save knows it) and at most this many bytes goes as
  // ONE streamed PUT rather than parts: faster on servers whose CompleteMultipartUpload rewrites
  // the object (s3rver), but a failure cannot be retried part by part and no upload checksum can
  // be sent (the CRC is known only at the end). 0: never (the default, right for AWS).
  uint64_t put_threshold = 0;  // CKPT_S3_PUT_THRESHOLD, at most 5 GiB
  size_t parts_in_flight = 4;               // CKPT_S3_PARTS_IN_FLIGHT: uploads at once (memory: parts x part size)
  // A read is split into ranges_in_flight ranged GETs of at least range_size bytes each.
  uint64_t range_size = uint64_t{8} << 20;  // CKPT_S3_RANGE_SIZE: smallest piece of a parallel ranged GET
  size_t ranges_in_flight = 8;              // CKPT_S3_RANGES_IN_FLIGHT: GETs at once per read
  // Each upload (PUT, part) carries its CRC-32 for the server to verify (x-amz-checksum-crc32).
  // CKPT_S3_CHECKSUM=none: for a server that refuses the header.
  bool send_checksums = true;  // CKPT_S3_CHECKSUM=crc32|none
  // A run's writer lease (lease.h): it expires this long after its holder last renewed it.
  long lease_s = 60;  // CKPT_S3_LEASE_S

  // Tests: "HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT" entries, as curl's --connect-to.
  std::vector<std::string> connect_to;

  // Identifies the settings that shape a connection (a client is reused while they are equal).
  std::string fingerprint() const;
};

// Reads the environment through `getenv` and files through `read_file` (returns false when the
// file does not exist): injectable for tests. Throws kInvalidArgument for a malformed setting
// (a non-numeric CKPT_S3_* value, a profile named in AWS_PROFILE that no file has, an endpoint
// without http:// or https://). Missing credentials are not an error here (anonymous requests
// may be allowed); the client says so when a server refuses.
using GetEnv = std::function<const char*(const char*)>;
using ReadFile = std::function<bool(const std::string& path, std::string* contents)>;
Config config_from_environment(const GetEnv& getenv, const ReadFile& read_file);
// The process's own environment and files.
Config config_from_environment();

// RFC 3986 percent-encoding as SigV4 wants it: A-Z a-z 0-9 - . _ ~ pass, every other byte is
// %XX (uppercase); '/' passes only when `keep_slash`.
std::string uri_encode(const std::string& s, bool keep_slash);

// The canonical query string: names and values encoded, pairs sorted by name then value, an
// empty value written as "name=" (SigV4 §canonical request; libcurl 7.88 signs the query as it
// is given, so it must be given canonical).
std::string canonical_query(std::vector<std::pair<std::string, std::string>> query);

struct Url {
  std::string url;   // what libcurl is handed: scheme://host/path?query, all canonical
  std::string host;  // the Host header (and the signed host)
};
// The URL of `key` in `bucket` (key empty: the bucket itself), with `query`.
Url object_url(const Config& config, const std::string& bucket, const std::string& key,
               const std::vector<std::pair<std::string, std::string>>& query = {});

}  // namespace ckpt::io::s3
