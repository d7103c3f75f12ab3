// A restricted pickle reader and a protocol-2 pickle writer for PyTorch checkpoints.
//
// The reader accepts what PyTorch 2.x's torch.load(weights_only=True) accepts — containers,
// plain values, tensors and the few torch objects its allowlist names — from pickle protocols
// 2 to 5, and nothing else. It never imports or calls anything named by the file: each allowed
// global maps to a fixed handler in pickle_reader.cc; any other global or opcode is refused
// with an error naming it. Input sizes, memo, stack, nesting and the expanded object count are
// bounded (Limits), and cyclic structures are refused.
//
// The writer emits exactly the opcodes and globals torch.save uses (protocol 2), so files load
// in torch 1.13 and in 2.x with weights_only=True.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "ckpt/value.h"

namespace ckpt::pickle {

struct Limits {
  size_t max_depth = 1000;            // container nesting and open MARKs
  size_t max_memo = size_t{1} << 22;  // memo entries
  size_t max_stack = size_t{1} << 24;
  size_t max_objects = size_t{1} << 26;  // nodes of the tree with shared nodes expanded
  // TorchScript archives (torch.jit.save, LibTorch's torch::save): a global of a `__torch__.*`
  // class becomes a class object; NEWOBJ of it with no arguments an instance (a kObject whose
  // args are its attribute dict) and BUILD with a dict sets the attributes. Nothing is imported
  // and no code of the archive runs; the archive reader turns the objects into state dicts.
  // TorchScript's typed-list builders (torch.jit._pickle.build_intlist, build_doublelist,
  // build_boollist, build_tensorlist, restore_type_tag) return their list, checked; outside
  // TorchScript archives they are refused, as torch's weights_only refuses them.
  bool script_objects = false;
};

// True for the object type of a TorchScript class or instance ("__torch__.x.Linear").
bool is_script_type(const std::string& type);

// Called for each BINPERSID with the persistent id (a tuple); returns the object it names.
using PersistentLoad = std::function<Value(const Value& pid)>;

// Unpickles one pickle from [data, data+size). `consumed`, if given, receives the number of
// bytes up to and including STOP (the legacy format concatenates several pickles).
// Throws ckpt::Error (kCorruption, kUnsafe, kUnsupported) mentioning the byte offset.
Value unpickle(const std::byte* data, size_t size, const PersistentLoad& persistent_load, const Limits& limits = {},
               size_t* consumed = nullptr);

// Returns the key under which a tensor's storage is written ("0", "1", ... in first-use order).
using StorageKey = std::function<std::string(const TensorRef&)>;

// Pickles `root` with protocol 2 as torch.save would.
std::string pickle(const Value& root, const StorageKey& storage_key, size_t max_depth = 1000);

}  // namespace ckpt::pickle
