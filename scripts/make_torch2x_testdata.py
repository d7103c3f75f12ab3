#!/usr/bin/python3
"""Writes tests/data/torch2x/: torch 1.13 training runs rewritten into the optimizer and scheduler
state-dict layouts that torch 2.2.2 ... 2.14.0 write, for the C++ tests that continue training from
them (issue 19, item 3).

Run with the Debian torch 1.13 interpreter, from anywhere:

    /usr/bin/python3 scripts/make_torch2x_testdata.py

No torch 2.x exists on this machine, so the 2.x layouts are not produced by 2.x: each file holds a
torch 1.13 run whose `optimizer_state` / `scheduler_state` have been rewritten into the keys, key
order and value types that the named release writes, as read from that release's own sources and
collected in ../shared/notes/pytorch-2x.md (section 1a: param_group keys, 1b: per-parameter state,
2: scheduler keys). Those tables are encoded below (TABLE_1A, TABLE_1B rules, TABLE_2) and every
written dict is checked against them. Two facts were read again for this script, in the wheels the
notes cite (timmderrickson/DNN_Training_Pipeline @ de817fa9f019 = 2.3.0+cu121 and @ f1b06ff351d8 =
2.7.0+cpu, Kushmathur1206/Music-Generator = 2.2.2):
  * SGD with momentum=0 stores {'momentum_buffer': None} per stepped parameter in 2.2.2 and 2.3.0
    exactly as 1.13 does (sgd.py `state['momentum_buffer'] = momentum_buffer` for every stepped
    param); only 2.5.1+ guard it with `if group["momentum"] != 0` (state == {}).
  * LinearLR, absent from table 2, was executed from the 2.3.0 and 2.7.0 lr_scheduler.py on the
    1.13 runtime: start_factor, end_factor, total_iters + the base tail, as every other scheduler.

The training itself (what the C++ test reproduces in LibTorch):
  torch.set_num_threads(1); torch.manual_seed(0); model = Sequential(Linear(4, 8), Tanh(),
  Linear(8, 2)) (float32); inputs (16x4) and targets (16x2) from torch.Generator seeded 1
  (randn). One step = zero_grad(set_to_none=True); loss = F.mse_loss(model(inputs), targets)
  (mean); loss.backward(); optimizer.step(); then scheduler.step() (ReduceLROnPlateau:
  scheduler.step(loss.item()), the loss computed before optimizer.step()). LBFGS instead calls
  optimizer.step(closure) with closure = those first three lines returning loss; no scheduler.
  6 steps, state dicts taken (deep copies), 5 more steps on the same objects recording every
  parameter and param_groups[0]['lr'] after each step (after scheduler.step()).

Then every file is checked on 1.13: a fresh model/optimizer/scheduler built with the same
arguments, loaded with the 1.13 dicts and with each rewritten dict (model, then optimizer built,
scheduler built, optimizer.load_state_dict, scheduler.load_state_dict), continued 5 steps, must give
bit-identical parameters and lrs to the uninterrupted run (the 2.x keys must not change the math on
1.13: e.g. RMSprop's step as a tensor, SGD without momentum state, extra flags ignored).

Output is deterministic (fixed seeds, one thread); MANIFEST.json lists every file with its sha256.
"""

import collections
import copy
import hashlib
import io
import json
import os
import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "torch2x")
NOTES = "../shared/notes/pytorch-2x.md"

TAGS = ["1.13.1", "2.2.2", "2.3.0", "2.5.1", "2.6.0", "2.7.0", "2.9.1", "2.14.0"]
STEPS_BEFORE = 6
STEPS_AFTER = 5


def ver(tag):
    return tuple(int(x) for x in tag.split("."))


# Where each tag's layout was read (notes §0). 1.13.1 is the run itself.
SOURCES = {
    "1.13.1": "torch 1.13.1 (Debian python3-torch 1.13.1+dfsg-4) run on this machine: its own state_dict(), unchanged",
    "2.2.2": "torch 2.2.2 wheel, Kushmathur1206/Music-Generator @ fdf5fa42be10, venv/Lib/site-packages/torch/optim/*.py",
    "2.3.0": "torch 2.3.0 wheel, timmderrickson/DNN_Training_Pipeline @ de817fa9f019, venv/Lib/site-packages/torch/optim/*.py",
    "2.5.1": "torch 2.5.1 wheel, cyber765/90cgui @ c3ab7801dce7, torch/optim/*.py",
    "2.6.0": "torch 2.6.0 wheel, zaidshaikh987/AI-Hospital-Optimizer @ 295b238a9249, venv/Lib/site-packages/torch/optim/*.py",
    "2.7.0": "torch 2.7.0 wheel, timmderrickson/DNN_Training_Pipeline @ f1b06ff351d8, venv/Lib/site-packages/torch/optim/*.py",
    "2.9.1": "torch 2.9.1 wheel, mikebeth/MSLG-SPA-2026 @ d17e511afe89, venv/Lib/site-packages/torch/optim/*.py",
    "2.14.0": ("torch 2.14.0 wheel, knightmare04-boop/Shadow_project_1, .venv/Lib/site-packages/torch/optim/"
               "{adam,adamw,sgd,rmsprop,adagrad,optimizer,lr_scheduler}.py @ 6825816d989b (schedulers other "
               "than the base class, ReduceLROnPlateau and OneCycleLR taken as 2.9.1's, notes 'Gaps')"),
}


def source_for(tag):
    s = SOURCES[tag]
    if tag != "1.13.1":
        s += "; layout as tabulated in %s §1a, §1b, §2" % NOTES
    return s


# ---- Table 1a (notes §1a): param_group keys in order, `params` excluded (state_dict appends it
# last; keys a scheduler adds, e.g. initial_lr, come between these and params). A bare name keeps
# the 1.13 run's value; `name=value` is the value that release stores with default arguments.
TABLE_1A = {
    "SGD": {
        "1.13.1": "lr momentum dampening weight_decay nesterov maximize foreach differentiable",
        "2.2.2": "lr momentum dampening weight_decay nesterov maximize foreach differentiable",
        "2.3.0": "lr momentum dampening weight_decay nesterov maximize foreach differentiable fused=None",
        "2.5.1": "lr momentum dampening weight_decay nesterov maximize foreach differentiable fused=None",
        "2.7.0": "lr momentum dampening weight_decay nesterov maximize foreach differentiable fused=None",
    },
    "Adam": {
        "1.13.1": "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused=False",
        "2.2.2": "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused=None",
        "2.3.0": "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused=None",
        "2.5.1": "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused=None",
        "2.7.0": ("lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused=None "
                  "decoupled_weight_decay=False"),
    },
    "AdamW": {
        "1.13.1": "lr betas eps weight_decay amsgrad foreach maximize capturable",
        "2.2.2": "lr betas eps weight_decay amsgrad foreach maximize capturable differentiable=False fused=None",
        "2.3.0": "lr betas eps weight_decay amsgrad foreach maximize capturable differentiable=False fused=None",
        "2.5.1": "lr betas eps weight_decay amsgrad foreach maximize capturable differentiable=False fused=None",
        "2.7.0": ("lr betas eps weight_decay amsgrad maximize foreach capturable differentiable=False fused=None "
                  "decoupled_weight_decay=True"),
    },
    "RMSprop": {
        "1.13.1": "lr momentum alpha eps centered weight_decay foreach maximize differentiable",
        "2.2.2": "lr momentum alpha eps centered weight_decay foreach maximize differentiable",
        "2.3.0": "lr momentum alpha eps centered weight_decay foreach maximize differentiable",
        "2.5.1": "lr momentum alpha eps centered weight_decay capturable=False foreach maximize differentiable",
        "2.7.0": "lr momentum alpha eps centered weight_decay capturable=False foreach maximize differentiable",
    },
    "Adagrad": {
        "1.13.1": "lr lr_decay eps weight_decay initial_accumulator_value foreach maximize",
        "2.2.2": "lr lr_decay eps weight_decay initial_accumulator_value foreach maximize differentiable=False",
        "2.3.0": "lr lr_decay eps weight_decay initial_accumulator_value foreach maximize differentiable=False",
        "2.5.1": ("lr lr_decay eps weight_decay initial_accumulator_value foreach maximize differentiable=False "
                  "fused=None"),
        "2.7.0": ("lr lr_decay eps weight_decay initial_accumulator_value foreach maximize differentiable=False "
                  "fused=None"),
    },
    "LBFGS": {t: "lr max_iter max_eval tolerance_grad tolerance_change history_size line_search_fn"
              for t in ("1.13.1", "2.2.2", "2.3.0", "2.5.1", "2.7.0")},
}
# The notes' table columns: 2.5.1 = 2.6.0; 2.7.0 = 2.9.1 = 2.14.0.
TABLE_1A_COLUMN = {"1.13.1": "1.13.1", "2.2.2": "2.2.2", "2.3.0": "2.3.0", "2.5.1": "2.5.1",
                   "2.6.0": "2.5.1", "2.7.0": "2.7.0", "2.9.1": "2.7.0", "2.14.0": "2.7.0"}

KEEP = object()  # a bare name in a table: keep the run's value


def parse_table(spec):
    out = []
    for item in spec.split():
        if "=" in item:
            k, v = item.split("=")
            out.append((k, {"None": None, "False": False, "True": True}[v]))
        else:
            out.append((item, KEEP))
    return out


def group_layout(opt, tag):
    return parse_table(TABLE_1A[opt][TABLE_1A_COLUMN[tag]])


# ---- Table 1b (notes §1b): per-parameter state changes relative to 1.13.
def rmsprop_step_is_tensor(tag):  # RMSprop `step`: int through 2.3.0, float32 0-dim tensor from 2.5.1
    return ver(tag) >= (2, 5, 1)


def sgd_drops_none_buffers(tag):  # SGD momentum=0: {'momentum_buffer': None} through 2.3.0, state {} from 2.5.1
    return ver(tag) >= (2, 5, 1)


# ---- Table 2 (notes §2): scheduler state_dict keys in order. Subclass keys, then the base tail.
def base_tail(tag):
    if ver(tag) < (2, 7, 0):  # 1.13.1 ... 2.6.0
        return ["base_lrs", "last_epoch", "verbose", "_step_count", "_get_lr_called_within_step", "_last_lr"]
    if ver(tag) < (2, 9, 0):  # 2.7.0: verbose removed
        return ["base_lrs", "last_epoch", "_step_count", "_get_lr_called_within_step", "_last_lr"]
    # 2.9.1, 2.14.0: _is_initial
    return ["base_lrs", "last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step", "_last_lr"]


def scheduler_keys(name, tag):
    v = ver(tag)
    if name == "ReduceLROnPlateau":
        if v < (2, 5, 0):
            return ("factor min_lrs patience verbose cooldown cooldown_counter mode threshold threshold_mode "
                    "best num_bad_epochs mode_worse eps last_epoch _last_lr").split()
        if v < (2, 7, 0):
            return ("factor min_lrs patience verbose cooldown cooldown_counter mode threshold threshold_mode "
                    "eps last_epoch _last_lr mode_worse best num_bad_epochs").split()
        if v < (2, 9, 0):
            return ("factor default_min_lr min_lrs patience cooldown cooldown_counter mode threshold "
                    "threshold_mode eps last_epoch _last_lr mode_worse best num_bad_epochs").split()
        return ("factor default_min_lr min_lrs patience cooldown eps last_epoch _last_lr mode_worse mode "
                "threshold threshold_mode best cooldown_counter num_bad_epochs").split()
    head = {
        "StepLR": ["step_size", "gamma"],
        "MultiStepLR": ["milestones", "gamma"],
        "ExponentialLR": ["gamma"],
        "CosineAnnealingLR": ["T_max", "eta_min"],
        "LinearLR": ["start_factor", "end_factor", "total_iters"],
        "OneCycleLR": ["total_steps", "_schedule_phases",
                       "_anneal_func_type" if v >= (2, 5, 0) else "anneal_func", "cycle_momentum", "use_beta1"],
    }[name]
    return head + base_tail(tag)


# 1.13.1 OneCycleLR pickles a bound method (getattr + the whole scheduler), 2.2.2/2.3.0 getattr on
# the class: no weights_only loader reads either (notes §2 and §4), so those files are not written.
ONECYCLE_SKIPPED = ["1.13.1", "2.2.2", "2.3.0"]

# ---- The runs.
# (config, optimizer, exact Python constructor kwargs, scheduler, exact kwargs)
CONFIGS = [
    ("sgd_momentum", "SGD", dict(lr=0.1, momentum=0.9, nesterov=False), None, {}),
    ("sgd_plain", "SGD", dict(lr=0.1, momentum=0), None, {}),
    ("adam", "Adam", dict(lr=0.01), None, {}),
    ("adam_amsgrad", "Adam", dict(lr=0.01, amsgrad=True), None, {}),
    ("adamw", "AdamW", dict(lr=0.01, weight_decay=0.01), None, {}),
    ("rmsprop_centered", "RMSprop", dict(lr=0.01, momentum=0.9, centered=True), None, {}),
    ("rmsprop", "RMSprop", dict(lr=0.01), None, {}),
    ("adagrad", "Adagrad", dict(lr=0.1), None, {}),
    ("lbfgs", "LBFGS", dict(lr=1, history_size=4, max_iter=3), None, {}),
    ("sgd_steplr", "SGD", dict(lr=0.1, momentum=0.9), "StepLR", dict(step_size=3, gamma=0.5)),
    ("sgd_plain_multisteplr", "SGD", dict(lr=0.1, momentum=0), "MultiStepLR",
     dict(milestones=[2, 7, 7, 9], gamma=0.5)),
    ("adam_exponentiallr", "Adam", dict(lr=0.01), "ExponentialLR", dict(gamma=0.9)),
    ("adam_cosineannealinglr", "Adam", dict(lr=0.01), "CosineAnnealingLR", dict(T_max=8)),
    ("sgd_linearlr", "SGD", dict(lr=0.1, momentum=0.9), "LinearLR",
     dict(start_factor=0.25, end_factor=1.0, total_iters=8)),
    ("adam_onecyclelr", "Adam", dict(lr=0.01), "OneCycleLR", dict(max_lr=0.05, total_steps=12)),
    ("sgd_reducelronplateau", "SGD", dict(lr=0.1, momentum=0.9), "ReduceLROnPlateau",
     dict(mode="min", factor=0.5, patience=1, threshold=0.05, cooldown=1)),
]


def make_data():
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(16, 4, generator=g)
    targets = torch.randn(16, 2, generator=g)
    return inputs, targets


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def make_objects(opt_name, opt_args, sched_name, sched_args):
    model = make_model()
    opt = getattr(torch.optim, opt_name)(model.parameters(), **opt_args)
    sched = getattr(torch.optim.lr_scheduler, sched_name)(opt, **sched_args) if sched_name else None
    return model, opt, sched


def train_step(model, opt, sched, inputs, targets):
    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    if isinstance(opt, torch.optim.LBFGS):
        loss = opt.step(closure)
    else:
        loss = closure()
        opt.step()
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(loss.item())
    elif sched is not None:
        sched.step()


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def continue_run(model, opt, sched, inputs, targets):
    params, lrs = [], []
    for _ in range(STEPS_AFTER):
        train_step(model, opt, sched, inputs, targets)
        params.append(snapshot(model))
        lrs.append(opt.param_groups[0]["lr"])
    return params, lrs


# ---- Rewriting a 1.13 dict into a tag's layout.
def rewrite_optimizer(sd, opt_name, tag):
    layout113 = [k for k, _ in group_layout(opt_name, "1.13.1")]
    layout = group_layout(opt_name, tag)
    groups = []
    for g in sd["param_groups"]:
        extras = [k for k in g if k not in layout113 and k != "params"]  # scheduler keys, in order
        ng = {}
        for k, v in layout:
            ng[k] = copy.deepcopy(g[k]) if v is KEEP else v
        for k in extras:
            ng[k] = copy.deepcopy(g[k])
        ng["params"] = list(g["params"])
        groups.append(ng)
    state = {}
    for idx, s in sd["state"].items():
        s = copy.deepcopy(s)
        if opt_name == "SGD" and sgd_drops_none_buffers(tag) and s.get("momentum_buffer", 0) is None:
            del s["momentum_buffer"]
            if not s:
                continue  # 2.5.1+: self.state[p] is never touched with momentum == 0
        if opt_name == "RMSprop" and rmsprop_step_is_tensor(tag) and isinstance(s["step"], int):
            s["step"] = torch.tensor(float(s["step"]), dtype=torch.float32)  # torch.zeros(()) += 1 each step
        state[idx] = s
    return {"state": state, "param_groups": groups}


def rewrite_scheduler(sd, sched_name, sched_args, tag):
    out = {}
    for k in scheduler_keys(sched_name, tag):
        if k in sd and k != "anneal_func":
            v = copy.deepcopy(sd[k])
            if sched_name == "CosineAnnealingLR" and k == "eta_min" and ver(tag) >= (2, 5, 0) \
                    and "eta_min" not in sched_args:
                v = float(v)  # 2.5+: default eta_min=0.0 (1.13 ... 2.3: 0)
        elif k == "_anneal_func_type":
            v = sched_args.get("anneal_strategy", "cos")
        elif k == "_is_initial":
            v = False  # _initial_mode resets it after the first step (2.9.1, 2.14.0)
        elif k == "default_min_lr":
            v = sched_args.get("min_lr", 0)  # a scalar min_lr (2.7.0+); None when a list was given
        else:
            raise KeyError("%s %s: no value for %r" % (sched_name, tag, k))
        out[k] = v
    return out


# ---- Checks against the tables.
def check_group_layout(sd, opt_name, tag):
    layout = group_layout(opt_name, tag)
    names = [k for k, _ in layout]
    for g in sd["param_groups"]:
        keys = list(g)
        assert keys[-1] == "params", (opt_name, tag, keys)
        assert keys[:len(names)] == names, (opt_name, tag, keys, names)
        for k, v in layout:
            if v is not KEEP:
                assert g[k] is v, (opt_name, tag, k, g[k], v)
        if tag == "1.13.1":  # the table's 1.13 column against what 1.13 really wrote
            extras = keys[len(names):-1]
            assert all(k in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum") for k in extras), \
                (opt_name, extras)


def check_state_layout(sd, opt_name, opt_args, tag):
    for idx, s in sd["state"].items():
        if opt_name == "RMSprop":
            step = s["step"]
            if rmsprop_step_is_tensor(tag):
                assert torch.is_tensor(step) and step.dim() == 0 and step.dtype == torch.float32, (tag, step)
            else:
                assert type(step) is int, (tag, step)
        if opt_name in ("Adam", "AdamW", "Adagrad"):
            assert torch.is_tensor(s["step"]) and s["step"].dim() == 0 and s["step"].dtype == torch.float32
        if opt_name == "SGD":
            if opt_args.get("momentum", 0) != 0:
                assert torch.is_tensor(s["momentum_buffer"])
            else:
                assert not sgd_drops_none_buffers(tag) and s == {"momentum_buffer": None}, (tag, s)
    if opt_name == "SGD" and opt_args.get("momentum", 0) == 0 and sgd_drops_none_buffers(tag):
        assert sd["state"] == {}, tag


def check_scheduler_layout(sd, sched_name, tag):
    assert list(sd) == scheduler_keys(sched_name, tag), (sched_name, tag, list(sd))
    if sched_name == "CosineAnnealingLR":
        assert type(sd["eta_min"]) is (float if ver(tag) >= (2, 5, 0) else int), (tag, sd["eta_min"])
    if sched_name == "MultiStepLR":
        assert type(sd["milestones"]) is collections.Counter


# ---- Describing a file against 1.13 (for the manifest).
def tname(v):
    if torch.is_tensor(v):
        return "tensor(%s, %s)" % (str(v.dtype).replace("torch.", ""), "0-dim" if v.dim() == 0 else list(v.shape))
    return type(v).__name__


def describe(opt_name, sd113, sd, ssd113, ssd):
    diffs = []
    g0, g = sd113["param_groups"][0], sd["param_groups"][0]
    added = [k for k in g if k not in g0]
    removed = [k for k in g0 if k not in g]
    if added:
        diffs.append("param_groups: + " + ", ".join("%s=%r" % (k, g[k]) for k in added))
    if removed:
        diffs.append("param_groups: - " + ", ".join(removed))
    for k in g:
        if k in g0 and k != "params" and g[k] != g0[k]:
            diffs.append("param_groups: %s %r -> %r" % (k, g0[k], g[k]))
    common0 = [k for k in g0 if k in g]
    common = [k for k in g if k in g0]
    if common0 != common:
        diffs.append("param_groups: order " + ", ".join(common))
    if set(sd["state"]) != set(sd113["state"]):
        diffs.append("state: %d entries -> %d (%s)" % (
            len(sd113["state"]), len(sd["state"]),
            "no {'momentum_buffer': None} entries: state == {}" if not sd["state"] else "changed"))
    seen = set()
    for idx in sd["state"]:
        for k, v in sd["state"][idx].items():
            a, b = tname(sd113["state"][idx][k]), tname(v)
            if a != b and k not in seen:
                seen.add(k)
                diffs.append("state: %s %s -> %s" % (k, a, b))
    if ssd is not None:
        added = [k for k in ssd if k not in ssd113]
        removed = [k for k in ssd113 if k not in ssd]
        if added:
            diffs.append("scheduler: + " + ", ".join("%s=%r" % (k, ssd[k]) for k in added))
        if removed:
            diffs.append("scheduler: - " + ", ".join(removed))
        for k in ssd:
            if k in ssd113 and tname(ssd[k]) != tname(ssd113[k]):
                diffs.append("scheduler: %s %s %r -> %s %r" % (k, tname(ssd113[k]), ssd113[k], tname(ssd[k]), ssd[k]))
        common0 = [k for k in ssd113 if k in ssd]
        common = [k for k in ssd if k in ssd113]
        if common0 != common:
            diffs.append("scheduler: order " + ", ".join(ssd))
    return diffs or ["nothing: identical to 1.13.1's layout"]


# ---- Writing.
def save(obj, path):
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def same_params(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def resume_from(cfg, model_state, opt_sd, sched_sd, inputs, targets):
    _, opt_name, opt_args, sched_name, sched_args = cfg
    model, opt, sched = make_objects(opt_name, opt_args, sched_name, sched_args)
    model.load_state_dict(model_state)
    opt.load_state_dict(copy.deepcopy(opt_sd))
    if sched is not None:
        sched.load_state_dict(copy.deepcopy(sched_sd))
    return continue_run(model, opt, sched, inputs, targets)


def run_config(cfg, inputs, targets, manifest):
    name, opt_name, opt_args, sched_name, sched_args = cfg
    model, opt, sched = make_objects(opt_name, opt_args, sched_name, sched_args)
    for _ in range(STEPS_BEFORE):
        train_step(model, opt, sched, inputs, targets)
    model_state = model.state_dict()  # an OrderedDict with its _metadata, as torch.save(model.state_dict())
    for k in model_state:
        model_state[k] = model_state[k].detach().clone()
    opt_sd = copy.deepcopy(opt.state_dict())
    sched_sd = None
    if sched is not None:
        sched_sd = {k: (None if k == "anneal_func" else copy.deepcopy(v)) for k, v in sched.state_dict().items()}
    expected_params, expected_lr = continue_run(model, opt, sched, inputs, targets)

    check_group_layout(opt_sd, opt_name, "1.13.1")
    check_state_layout(opt_sd, opt_name, opt_args, "1.13.1")
    if sched is not None:
        check_scheduler_layout(sched_sd, sched_name, "1.13.1")
        # 1.13 resume with its own dict (anneal_func is the constructor's bound method either way)
        ref = {k: v for k, v in sched_sd.items() if k != "anneal_func"}
    else:
        ref = None
    p, l = resume_from(cfg, model_state, opt_sd, ref, inputs, targets)
    assert same_params(p, expected_params) and l == expected_lr, (name, "1.13 resume differs")

    for tag in TAGS:
        if sched_name == "OneCycleLR" and tag in ONECYCLE_SKIPPED:
            continue
        osd = rewrite_optimizer(opt_sd, opt_name, tag)
        ssd = rewrite_scheduler(sched_sd, sched_name, sched_args, tag) if sched is not None else None
        check_group_layout(osd, opt_name, tag)
        check_state_layout(osd, opt_name, opt_args, tag)
        if ssd is not None:
            check_scheduler_layout(ssd, sched_name, tag)
        # The rewritten dicts must load into 1.13 and continue exactly as the original run.
        p, l = resume_from(cfg, model_state, osd, ssd, inputs, targets)
        assert same_params(p, expected_params), (name, tag, "params differ after resume")
        assert l == expected_lr, (name, tag, l, expected_lr)

        doc = {
            "torch_version": tag,
            "source": source_for(tag),
            "config": name,
            "optimizer": opt_name,
            "optimizer_args": dict(opt_args),
            "scheduler": sched_name,
            "scheduler_args": dict(sched_args),
            "model_state": model_state,
            "optimizer_state": osd,
            "scheduler_state": ssd,
            "inputs": inputs,
            "targets": targets,
            "steps_after": STEPS_AFTER,
            "expected_params": expected_params,
            "expected_lr": expected_lr,
        }
        rel = "%s-%s.pt" % (name, tag)
        sha, size = save(doc, os.path.join(OUT, rel))
        back = torch.load(os.path.join(OUT, rel))
        assert list(back["optimizer_state"]["param_groups"][0]) == list(osd["param_groups"][0])
        if ssd is not None:
            assert list(back["scheduler_state"]) == list(ssd)
        manifest["files"][rel] = {
            "tag": tag, "config": name, "optimizer": opt_name, "scheduler": sched_name,
            "differs_from_1.13.1": describe(opt_name, opt_sd, osd, sched_sd, ssd) if tag != "1.13.1"
            else ["nothing: torch 1.13.1's own state_dict()"],
            "size": size, "sha256": sha,
        }
    return dict(model_state=model_state, opt_sd=opt_sd, sched_sd=sched_sd,
                expected_params=expected_params, expected_lr=expected_lr)


def write_bad(runs, cfgs, inputs, targets, manifest):
    def full(cfg_name, tag, opt_name=None, opt_args=None):
        cfg = cfgs[cfg_name]
        r = runs[cfg_name]
        return {
            "torch_version": tag, "source": source_for(tag), "config": cfg_name,
            "optimizer": opt_name or cfg[1], "optimizer_args": dict(opt_args or cfg[2]),
            "scheduler": cfg[3], "scheduler_args": dict(cfg[4]),
            "model_state": r["model_state"],
            "optimizer_state": rewrite_optimizer(r["opt_sd"], cfg[1], tag),
            "scheduler_state": None,
            "inputs": inputs, "targets": targets, "steps_after": STEPS_AFTER,
            "expected_params": r["expected_params"], "expected_lr": r["expected_lr"],
        }

    bad = []

    def adam_group_edit(fname, edit, expect, note):
        doc = full("adam", "2.14.0")
        edit(doc["optimizer_state"])
        bad.append((fname, doc, "file", "Adam", None, expect, note))

    def set_group(k, v):
        return lambda osd: osd["param_groups"][0].__setitem__(k, v)

    adam_group_edit("adam-2.14.0-maximize.pt", set_group("maximize", True), ["maximize"],
                    "maximize=True changes the math (gradient ascent) and LibTorch's Adam has no such option: "
                    "refuse, naming 'maximize' and the fix (train with maximize=False / negate the loss)")
    adam_group_edit("adam-2.14.0-fused.pt", set_group("fused", True), ["fused"],
                    "fused=True (a fused-kernel run) cannot be honoured: refuse, naming 'fused' "
                    "(fused=None/False are accepted)")
    adam_group_edit("adam-2.14.0-capturable.pt", set_group("capturable", True), ["capturable"],
                    "capturable=True (CUDA-graph run) cannot be honoured: refuse, naming 'capturable' "
                    "(capturable=False is accepted)")
    adam_group_edit("adam-2.14.0-unknown-key.pt", set_group("unknown_option", 1), ["unknown_option"],
                    "a group key no release of Adam writes: refuse, naming 'unknown_option'")
    adam_group_edit("adam-2.14.0-betas3.pt", set_group("betas", (0.9, 0.999, 0.5)), ["betas"],
                    "betas with 3 values: refuse, naming 'betas' (expects 2)")
    adam_group_edit("adam-2.14.0-step-str.pt", lambda osd: osd["state"][0].__setitem__("step", "6"), ["step"],
                    "state[0]['step'] is the string '6': refuse, naming 'step' (expects a 0-dim tensor)")

    # AdamW's own run, in 2.14.0's layout: in 2.7+ that is exactly what Adam(decoupled_weight_decay=True)
    # writes (AdamW is an Adam subclass forcing it), so the file is labelled Adam.
    doc = full("adamw", "2.14.0", opt_name="Adam",
               opt_args=dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True))
    assert doc["optimizer_state"]["param_groups"][0]["decoupled_weight_decay"] is True
    bad.append(("adam-2.14.0-decoupled_weight_decay.pt", doc, "file", "Adam", "AdamW",
                ["decoupled_weight_decay", "AdamW"],
                "an Adam group with decoupled_weight_decay=True trains as AdamW (2.7+): refused into "
                "LibTorch's Adam naming 'decoupled_weight_decay' with the hint to use AdamW; accepted into "
                "AdamW(lr=0.01, weight_decay=0.01), which then continues to expected_params/expected_lr "
                "(the adamw run's values)"))

    steplr = rewrite_scheduler(runs["sgd_steplr"]["sched_sd"], "StepLR", cfgs["sgd_steplr"][4], "2.14.0")
    bad.append(("steplr-2.14.0-as-cosineannealinglr.pt", steplr, "scheduler_state", "CosineAnnealingLR", None,
                ["step_size", "T_max"],
                "just a StepLR state dict (2.14.0 layout); loading it into CosineAnnealingLR must fail in one "
                "line naming the foreign key 'step_size' or the missing 'T_max' (either satisfies)"))
    missing = rewrite_scheduler(runs["sgd_steplr"]["sched_sd"], "StepLR", cfgs["sgd_steplr"][4], "2.9.1")
    del missing["last_epoch"]
    bad.append(("steplr-2.9.1-missing-last_epoch.pt", missing, "scheduler_state", "StepLR", None, ["last_epoch"],
                "just a StepLR state dict in 2.9.1's layout (with _is_initial, without verbose) missing "
                "'last_epoch': loading it into StepLR must fail naming 'last_epoch' (the version's other "
                "differences are fine)"))

    for fname, obj, content, load_as, accept_into, expect, note in bad:
        sha, size = save(obj, os.path.join(OUT, "bad", fname))
        manifest["bad"]["bad/" + fname] = {
            "content": content, "load_as": load_as, "accepted_into": accept_into,
            "error_must_name": expect, "note": note, "size": size, "sha256": sha,
        }


def main():
    assert torch.__version__.startswith("1.13"), "run with /usr/bin/python3 (torch 1.13), not %s" % torch.__version__
    os.makedirs(os.path.join(OUT, "bad"), exist_ok=True)
    for d in (OUT, os.path.join(OUT, "bad")):
        for f in os.listdir(d):
            if f.endswith(".pt"):
                os.remove(os.path.join(d, f))
    inputs, targets = make_data()
    manifest = {
        "generator": "scripts/make_torch2x_testdata.py (run with /usr/bin/python3, torch %s)" % torch.__version__,
        "layouts_from": NOTES + " (tables 1a, 1b, 2); each file's 'source' names the release read",
        "skipped": {"adam_onecyclelr-%s.pt" % t: (
            "not written: torch %s's OneCycleLR state pickles %s, which no weights_only loader reads"
            % (t, "a bound method (getattr, the scheduler, its optimizer)" if t == "1.13.1"
               else "getattr(OneCycleLR, '_annealing_cos')")) for t in ONECYCLE_SKIPPED},
        "files": {}, "bad": {},
    }
    runs, cfgs = {}, {}
    for cfg in CONFIGS:
        cfgs[cfg[0]] = cfg
        runs[cfg[0]] = run_config(cfg, inputs, targets, manifest)
        print("%-24s ok" % cfg[0], file=sys.stderr)
    write_bad(runs, cfgs, inputs, targets, manifest)
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("%d files, %d bad, %d bytes" % (len(manifest["files"]), len(manifest["bad"]), total), file=sys.stderr)


if __name__ == "__main__":
    main()
