// ckpt/async.h — saves that stall training only for a memory copy.
//
//   ckpt::AsyncSaver saver;                       // keep it for the whole run
//   for (...) {
//     train_step();
//     if (step % 1000 == 0) saver.save(state.to_value(), "run/last.pt");   // returns after the copy
//   }
//   saver.wait();                                 // the last save is on disk (or its error is thrown)
//
// save() pickles the value and copies every tensor's bytes into host buffers that are reused
// from one save to the next, then returns: the caller may change the model at once. A worker
// thread writes and publishes the file crash-safely, exactly as ckpt::save does; it runs at a lower
// CPU priority (nice 10) than the caller, so a busy training loop keeps the cores.
// Thread safety: save(), wait() and pending() may be called from any thread; saves run one after
// another on the saver's own writer thread, in the order save() was called.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "ckpt/serialize.h"

namespace ckpt {

class AsyncSaver {
 public:
  // At most `max_in_flight` saves are queued or being written; save() waits for room.
  explicit AsyncSaver(size_t max_in_flight = 1);
  // Waits for the saves in flight. Never throws: an error no wait() collected is printed.
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Snapshots `value` and queues it for writing to `path`. Throws the error of an earlier save
  // that nobody collected yet, any error of the snapshot itself, and a lack of disk space
  // (checked here, before the copy, when options.check_free_space). `on_published`, when
  // given, runs on the writer thread once the file is durable under its final name; what it
  // throws is reported like a failed save. The run manager commits its index there.
  using PublishedFn = std::function<void(const SavedFile&)>;
  void save(const Value& value, const std::string& path, const SaveOptions& options = {},
            PublishedFn on_published = nullptr);
  // Blocks until every queued save is published; throws the first error among them.
  void wait();
  // Saves queued or being written.
  size_t pending() const;

 private:
  struct Impl;  // the queue, the writer thread and the reused snapshot memory
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckpt
