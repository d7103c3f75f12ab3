// TorchScript archives read as state dicts, without running anything.
//
// torch.jit.save and LibTorch's torch::save(module | optimizer | tensor) write a zip laid out
// like torch.save's (ARCHIVE/data.pkl, ARCHIVE/data/N, ARCHIVE/version) plus ARCHIVE/code/ (the
// TorchScript source of every class), ARCHIVE/constants.pkl and debug records. Python's
// torch.load hands them to torch.jit.load, which compiles and runs that code and returns a
// ScriptModule — no state dict, and for an optimizer nothing Python's optimizer can load. ckpt
// reads them like this:
//   1. data.pkl is unpickled with pickle::Limits::script_objects: each `__torch__.*` object is
//      kept as its attribute dict (nothing is imported, no code runs);
//   2. code/PATH.py is read as text, only for each class's `__parameters__ = [...]` and
//      `__buffers__ = [...]` declarations (which attributes are parameters and buffers);
//   3. the object tree becomes what Python would use:
//      - torch::save(optimizer) (attributes pytorch_version, state, param_groups): Python's
//        optimizer.state_dict() layout — 'state' keyed by parameter index in group order
//        (LibTorch keys it by the parameter's address), 'param_groups' holding every saved
//        hyperparameter and 'params': [indices] — which Python's load_state_dict takes;
//      - a module (torch::save(module), torch.jit.save): its state dict, an OrderedDict of
//        parameters and buffers under Python's dotted names in Python's order (each module's
//        parameters, then its buffers, then its children), as
//        torch.jit.load(f).state_dict() gives it (TorchScript records no buffer persistence, so
//        a non-persistent buffer is included);
//      - torch::save(tensor) / torch::save(std::vector<Tensor>) (a module whose attributes are
//        only "0", "1", ... tensors): the tensor, or a list of them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ckpt/value.h"

namespace ckpt::script {

struct ClassDecl {
  std::vector<std::string> parameters, buffers;
};
using Classes = std::map<std::string, ClassDecl>;  // "__torch__.torch.nn.modules.linear.Linear" -> ...

// Adds the classes declared in `source`, the text of the record code/`path`.py (`path` such as
// "__torch__/torch/nn/modules/linear").
void parse_classes(const std::string& path, const std::string& source, Classes* out);

// Step 3 above. Throws kCorruption (naming the attribute) when the tree is not one of those shapes.
Value to_state(const Value& root, const Classes& classes);

}  // namespace ckpt::script
