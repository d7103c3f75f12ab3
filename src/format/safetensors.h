// safetensors (Hugging Face's weights format: no code, zero-copy), read and written.
//
// Byte layout:
//   [0, 8)        N, the header's length: little-endian u64, at most 100,000,000
//   [8, 8 + N)    the header: a UTF-8 JSON object, padded with spaces so that N % 8 == 0:
//                   {"__metadata__": {"key": "value", ...},          (optional; string -> string)
//                    "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
//   [8 + N, end)  the byte buffer: each tensor's elements, little-endian, C order, at
//                 [BEGIN, END) relative to the buffer's start
// Reading checks what the reference implementation checks: the header size cap, UTF-8 JSON
// beginning with '{', every entry well-formed, END - BEGIN == numel * element size (without
// overflow), the tensors (in offset order) tiling the buffer exactly — no hole, no overlap, the
// last ending at the end of the file — and a dtype LibTorch 1.13 has (BOOL U8 I8 I16 I32 I64
// F16 BF16 F32 F64; U16 U32 U64 and the float8 types are refused by name).
//
// Loaded, a file is an OrderedDict NAME -> tensor in offset order, plus "__metadata__" -> a dict
// of strings when the header has one. With LoadOptions::mmap the tensors view the file (no copy)
// wherever their offset is aligned to their element size (the reference writer aligns them all).
//
// Written (save_safetensors): the value must be a dict. Nested dicts, lists and tuples are
// flattened, their keys joined with "." ({"model": {"fc.weight": t}} -> "model.fc.weight", list
// items by index); a top-level "__metadata__" dict of strings becomes the header's metadata; any
// other non-tensor leaf (an int, a float, a bool, a string) is carried in the metadata under its
// flattened name as its Python repr, so that nothing is dropped silently; None and objects are
// refused naming the key. Every tensor is written as its own contiguous bytes, so views of one
// storage are written once per tensor, as the format requires. The tensors are laid out in the
// reference writer's order — by dtype, widest first (the format's dtype order, reversed), then by
// name — and the header is compact JSON with "__metadata__" first and each entry's keys in the
// order dtype, shape, data_offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ckpt/serialize.h"
#include "io/env.h"

namespace ckpt::safetensors {

// True when `data` holds a safetensors header: a length within the format's limit and the file,
// and that many bytes from '{' to '}' (trailing spaces allowed). Asked before the legacy format's
// first-byte signature: a header's length may begin with any byte, 0x80 included.
bool has_header(const std::byte* data, uint64_t size);
// Weaker: byte 8 is '{' (a safetensors file, maybe damaged; read() then says what is wrong).
// Asked only after has_header() and the other formats' signatures said no.
bool looks_like(const std::byte* data, uint64_t size);

Value read(std::shared_ptr<io::MappedFile> file, const LoadOptions& options, VerifyReport* report);

SavedFile write(io::Env* env, const Value& value, const std::string& path, const SaveOptions& options);

}  // namespace ckpt::safetensors
