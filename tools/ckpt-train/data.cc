#include "data.h"

#include <zlib.h>

#include <stdexcept>
#include <vector>

namespace ckpt::train {
namespace {

// IDX (the MNIST format): magic 0x00 0x00 <type 0x08 = uint8> <dims>, big-endian uint32 sizes,
// then the data.
torch::Tensor read_idx(const std::string& path, int expected_dims) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open (install dataset-fashion-mnist, or pass --data DIR)");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  bool bad = n < 0;
  gzclose(f);
  if (bad) throw std::runtime_error(path + ": not a readable gzip file");
  auto be32 = [&](size_t off) {
    return (uint32_t(bytes[off]) << 24) | (uint32_t(bytes[off + 1]) << 16) | (uint32_t(bytes[off + 2]) << 8) |
           bytes[off + 3];
  };
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] != expected_dims)
    throw std::runtime_error(path + ": not a uint8 IDX file with " + std::to_string(expected_dims) + " dimensions");
  std::vector<int64_t> shape;
  uint64_t count = 1;
  if (bytes.size() < 4 + 4 * size_t(expected_dims)) throw std::runtime_error(path + ": truncated IDX header");
  for (int d = 0; d < expected_dims; ++d) {
    shape.push_back(be32(4 + 4 * size_t(d)));
    count *= uint64_t(shape.back());
  }
  const size_t header = 4 + 4 * size_t(expected_dims);
  if (bytes.size() - header != count)
    throw std::runtime_error(path + ": IDX header promises " + std::to_string(count) + " bytes of data, the file has " +
                             std::to_string(bytes.size() - header));
  return torch::from_blob(bytes.data() + header, shape, torch::kUInt8).clone();
}

Split make_split(const torch::Tensor& images, const torch::Tensor& labels, int64_t begin, int64_t end) {
  Split s;
  s.images = images.slice(0, begin, end).unsqueeze(1).to(torch::kFloat32).div_(255.0).contiguous();
  s.labels = labels.slice(0, begin, end).to(torch::kInt64).contiguous();
  return s;
}

}  // namespace

FashionMnist load_fashion_mnist(const std::string& dir, int64_t train_samples, int64_t val_samples) {
  torch::Tensor images = read_idx(dir + "/train-images-idx3-ubyte.gz", 3);
  torch::Tensor labels = read_idx(dir + "/train-labels-idx1-ubyte.gz", 1);
  torch::Tensor test_images = read_idx(dir + "/t10k-images-idx3-ubyte.gz", 3);
  torch::Tensor test_labels = read_idx(dir + "/t10k-labels-idx1-ubyte.gz", 1);
  const int64_t n = images.size(0);
  if (labels.size(0) != n || test_labels.size(0) != test_images.size(0))
    throw std::runtime_error(dir + ": image and label files disagree on the number of samples");
  if (val_samples < 1 || val_samples >= n)
    throw std::runtime_error("--val-samples must be between 1 and " + std::to_string(n - 1));
  const int64_t available = n - val_samples;
  const int64_t train_n = train_samples > 0 ? std::min(train_samples, available) : available;
  FashionMnist d;
  d.train = make_split(images, labels, 0, train_n);
  d.val = make_split(images, labels, n - val_samples, n);
  d.test = make_split(test_images, test_labels, 0, test_images.size(0));
  return d;
}

}  // namespace ckpt::train
