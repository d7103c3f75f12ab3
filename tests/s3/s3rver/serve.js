// Starts s3rver 3.7.1 as its bin/s3rver.js does, plus one fix to a bug no S3 client can avoid:
//   node serve.js S3RVER_DIR ADDRESS PORT DATA_DIR
// S3RVER_DIR is where scripts/install-s3rver.sh installed it (its node_modules/s3rver). Logs off.
//
// The fix: lib/controllers/object.js decodes x-amz-copy-source with decodeURI, which leaves the
// escapes of reserved characters in place, so CopyObject from a key with '=' (every checkpoint:
// epoch=000-step=000002.pt) looks for 'epoch%3D000-...' and answers 404 NoSuchKey — to boto3 as to
// ckpt, both of which URL-encode the header as AWS requires. Re-encoding the fully decoded header
// with encodeURI makes its decodeURI give the key back. Nothing else is changed: the server stays
// as pessimistic as it is (notes in doc/object-storage.md, "Testing").
'use strict';
const path = require('path');

const [home, address, port, directory] = process.argv.slice(2);
if (!directory) {
  console.error('usage: node serve.js S3RVER_DIR ADDRESS PORT DATA_DIR');
  process.exit(2);
}
const S3rver = require(path.join(path.resolve(home), 'node_modules', 's3rver'));

const server = new S3rver({ address, port: Number(port), directory, silent: true });
server.middleware.unshift((ctx, next) => {
  const source = ctx.headers['x-amz-copy-source'];
  if (source) {
    try {
      ctx.headers['x-amz-copy-source'] = encodeURI(decodeURIComponent(source));
    } catch (err) {
      // A malformed escape: left for s3rver to refuse as it would.
    }
  }
  return next();
});
server.run().catch(err => {
  console.error(err);
  process.exit(1);
});
