// Would today's torch.load accept this pickle? A torch-free check of torch >= 2.6's default
// (weights_only=True) unpickler, for every pickle ckpt writes.
//
// The rules are those of torch/_weights_only_unpickler.py, read in torch 2.6.0 (venv copy in
// zaidshaikh987/AI-Hospital-Optimizer @ 295b238a9249) and 2.14.0 (knightmare04-boop/Shadow_project_1,
// file @ 4a8526f73399); see ../shared/notes/pytorch-2x.md §4 and doc/format.md §3.3. Where the
// releases differ, the stricter rule is kept, so a pickle that passes loads in every one of them:
//   - opcodes: only those Unpickler.load handles (no protocol 3-5 opcodes, no text opcodes,
//     no LONG4, no ADDITEMS); PROTO other than 2 is reported (torch warns on every load);
//   - GLOBAL: only names of 2.6.0's _get_allowed_globals(), after protocol 2's module renames
//     (`__builtin__` -> `builtins`); sys/os/posix/nt never. The tensor classes
//     (`torch.FloatTensor`, `torch.cuda.*`, `torch.sparse.*`) are left out: ckpt never writes
//     them, and a held list may only be stricter than torch's;
//   - REDUCE and NEWOBJ only on such a global that can be called (not a dtype, a qscheme or a
//     legacy storage class, which 2.x wraps in a non-callable StorageType);
//   - BUILD only on a tensor, a Parameter, an OrderedDict or an instance of an allowed class;
//   - APPEND(S) only onto a list; SETITEM(S) only onto a dict, OrderedDict or Counter (2.11+);
//   - BINPERSID only on ('storage', <storage class>, key, location, numel).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ckpt::weights_only {

// The globals the check accepts (sorted), and the opcodes (one byte each, sorted).
const std::vector<std::string>& allowed_globals();
const std::string& allowed_opcodes();

// The first thing in the pickle [data, data + size) that torch >= 2.6's weights_only unpickler
// would refuse, as one line naming the opcode or global and its byte offset ("global
// 'builtins.getattr' at byte 2 is not in torch's weights_only allowlist"); "" when there is none.
// Reads any bytes without trusting them (bounded; a malformed pickle is reported, not loaded).
std::string first_violation(const void* data, size_t size);

// True when the environment variable CKPT_AUDIT_WEIGHTS_ONLY is "1": then every archive ckpt
// writes has its data.pkl checked with first_violation() first, and a violation fails the save
// (kInvalidArgument) instead of writing a file today's torch.load refuses. ctest sets it for
// every test.
bool audit_enabled();

}  // namespace ckpt::weights_only
