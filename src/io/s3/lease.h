// The one-writer rule of an s3:// run directory: a lease object, since object storage has no
// flock and a crashed holder cannot drop one. It is the FileLock that Env::lock_file returns for
// an s3:// path.
//
// RUN/.lock holds four lines:
//   ckpt-lease/1
//   owner: pid 1234 on host
//   token: 8c1f…            (random: who wrote this version of the object)
//   expires_unix: 1795000123.5
// The protocol, step by step:
//   1. Acquire: PUT with If-None-Match: * — of several writers starting at once, one creates it.
//   2. It exists: GET it (body and ETag). Held — not expired, and its owner not a process of this
//      host that has died — fails naming the owner and when the lease expires. Otherwise take
//      it over: PUT with If-Match: the ETag read; of several takers one wins, the others get 412
//      and go back to 2.
//   3. Read it back: our token must be there. This catches a server that ignores conditional
//      headers (s3rver) when writers come one after another; it cannot catch two that race.
//      Then a create-only PUT of the same text, which must answer 412: a server that writes it
//      ignores conditional headers, and caveat() says so (the run warns once at open).
//   4. A thread renews it every lease_s / 3 (PUT If-Match: our last ETag). A 412 or 404 means
//      another writer took it over (we were paused or cut off past the expiry): the lease is
//      lost, and check() — called by a run before its commit point — throws.
//   5. The destructor stops renewing and deletes the object if it still holds our token.
// Expiry compares wall clocks of different machines: keep them in sync (NTP), or raise
// CKPT_S3_LEASE_S well above their skew.
#pragma once

#include <memory>
#include <string>

#include "io/env.h"
#include "io/s3/client.h"

namespace ckpt::io::s3 {

// Takes the lease `uri` for `owner` ("pid N on host"), or throws kIO naming its holder.
std::unique_ptr<FileLock> acquire_lease(std::shared_ptr<Client> client, const std::string& uri,
                                        const std::string& owner);

}  // namespace ckpt::io::s3
