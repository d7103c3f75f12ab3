// Objects as files: the io::Env seam for s3:// paths. Env::Default() routes every path that
// starts with "s3://" here (object_env.cc) and every other path to POSIX, so the format and
// manager layers read and write objects through the same WritableFile / MappedFile interfaces
// as files. The writer is in object_writer.cc, the reader in object_reader.cc.
//
// Writing (ObjectWritableFile): bytes are gathered into parts of Config::part_size; each full
// part is uploaded (UploadPart, retried on its own) by one of Config::parts_in_flight workers
// while the caller fills the next, so memory stays within (parts in flight + parts being filled)
// x part size whatever the object's size. An object no larger than one part goes up as one PUT
// with Content-Length. Nothing is visible under the key until close() has completed the upload
// (CompleteMultipartUpload, its 200 body checked for an <Error>) or the PUT has succeeded: an
// object store publishes in place, atomically, so AtomicFile needs no temp name and no rename
// there (Env::publishes_in_place). A file destroyed before close() aborts its upload.
//
// Reading (ObjectFile): HEAD for the size and ETag, then ranged GETs, each pinned to that ETag
// (If-Match) and checked against Content-Range. read_at() GETs straight into the caller's
// buffer, split into Config::range_size pieces fetched Config::ranges_in_flight at a time. data()
// is a reserved, lazily committed region of the object's size in which only the ranges asked for
// through prefetch() or mutable_range() are filled (the first 64 KiB and the last 128 KiB are
// fetched on open, for the format sniffing and the zip directory's end records). Lazy (mmap)
// loads therefore fetch a tensor's bytes when its data is first asked for, and `ckpt inspect`
// fetches the directory and the pickle only.
#pragma once

#include <memory>
#include <string>

#include "io/env.h"
#include "io/s3/client.h"

namespace ckpt::io::s3 {

// The Env Env::Default() returns: s3:// to object storage (the default_client()), everything
// else to `local`.
Env* routing_env(Env* local);

// The object file and writer behind it, for tests that pass their own client.
std::unique_ptr<WritableFile> new_object_writer(std::shared_ptr<Client> client, const std::string& uri,
                                                bool if_none_match = false);
std::shared_ptr<MappedFile> open_object(std::shared_ptr<Client> client, const std::string& uri);

}  // namespace ckpt::io::s3
