"""Distributed checkpoints inside torch.distributed: every rank writes its share, the ranks commit
together, and any world size loads them back. The same files as ckpt::dist in C++
(doc/distributed.md): a directory of plain torch.save files, one per rank, and metadata.json.

    import torch.distributed as dist, ckpt.distributed as cd
    dist.init_process_group("gloo")                       # under torchrun
    state = {"model": model.state_dict(),                 # replicated: written once in total
             "emb": cd.Shard(local_rows, offsets=(row0, 0), global_shape=(rows, dim)),
             "rng": cd.PerRank(torch.get_rng_state())}    # one per rank
    cd.save(state, "ckpts/step-000100")                   # every rank calls it
    state = cd.load(state, "ckpts/step-000100")           # fills the tensors in place

Every rank calls save() and load() with the same path, in the same order. A rank that fails
(an exception, a full disk, a killed process) leaves nothing published: the directory appears
only once every rank's file and the metadata are durable, and every rank raises an error that
names the failed rank. `ckpt.load(path)` of such a directory, in a plain process, returns the
whole state (shards joined, per-rank entries a list by rank).
"""

import datetime

from . import _ckpt, _native

__all__ = ["Shard", "PerRank", "save", "load", "DEFAULT_TIMEOUT"]

# The bound on every collective of save() and load() (ckpt::dist::kDefaultTimeout).
DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)


class Shard:
    """This rank's slice of a tensor of shape `global_shape`, starting at `offsets` (one per
    dimension). The slices of all ranks must tile the tensor exactly. On load, `local` is
    filled in place."""

    __slots__ = ("local", "offsets", "global_shape")

    def __init__(self, local, offsets, global_shape):
        self.local = local
        self.offsets = tuple(int(x) for x in offsets)
        self.global_shape = tuple(int(x) for x in global_shape)

    def __repr__(self):
        return f"Shard(local={tuple(self.local.shape)}, offsets={self.offsets}, global_shape={self.global_shape})"


class PerRank:
    """A value kept for each rank (an RNG state, a data position)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"PerRank({self.value!r})"


class LoadInfo(dict):
    """load()'s state dict, with `saved_world_size` and `per_rank` (under another world size:
    each per-rank key, '/'-joined, to the list of every saved rank's value)."""


def _group(group):
    if not _ckpt.has_distributed:
        raise RuntimeError("ckpt was built without distributed checkpoints (libgloo-dev was missing)")
    import torch.distributed as dist

    if group is None:
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialized: call init_process_group first")
        group = dist.distributed_c10d._get_default_group()
    return group


def _seconds(timeout):
    return timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)


def save(state_dict, path, *, group=None, timeout=DEFAULT_TIMEOUT, durable=True):
    """Collective: writes `state_dict` (nested dicts, lists and tuples; plain tensors are
    replicated, Shard and PerRank mark the others) into the new directory `path`. Returns this
    rank's {"path", "bytes_this_rank", "metadata_bytes"}."""
    return _native(_ckpt.dist_save, state_dict, str(path), _group(group), Shard, PerRank, _seconds(timeout), durable)


def _merge(template, loaded):
    """The template with its tensors and Shards kept (filled in place) and every other leaf
    taken from what was loaded."""
    import torch

    if isinstance(template, (torch.Tensor, Shard)):
        return template
    if isinstance(template, PerRank):
        inner = template.value
        if isinstance(inner, torch.Tensor) and isinstance(loaded, torch.Tensor):
            inner.copy_(loaded)
            return inner
        return loaded
    if isinstance(template, dict) and isinstance(loaded, dict) and template:
        out = type(template)() if type(template) is not dict else {}
        for k, v in template.items():
            out[k] = _merge(v, loaded[k]) if k in loaded else v
        return out
    if isinstance(template, (list, tuple)) and isinstance(loaded, (list, tuple)) and template:
        items = [_merge(t, l) for t, l in zip(template, loaded)]
        return tuple(items) if isinstance(template, tuple) else items
    return loaded


def load(state_dict, path, *, group=None, timeout=DEFAULT_TIMEOUT, strict=True):
    """Collective: fills `state_dict`'s tensors (and the `local` tensors of its Shards) in place
    from the checkpoint in `path`, reading only the pieces that overlap them, each CRC-checked.
    Returns the state dict with its other values filled in too (a LoadInfo: also
    `saved_world_size` and `per_rank`). PerRank entries get this rank's value when the world size
    is the one that saved; otherwise they stay and `per_rank` holds every saved rank's value."""
    loaded, saved_world, per_rank = _native(_ckpt.dist_load, state_dict, str(path), _group(group), Shard, PerRank,
                                            _seconds(timeout), strict)
    if per_rank:  # another world size: the PerRank markers stay as they were
        loaded = _replace_per_rank(state_dict, loaded)
    out = _merge(state_dict, loaded)
    info = LoadInfo(out) if isinstance(out, dict) else LoadInfo()
    info.saved_world_size = saved_world
    info.per_rank = per_rank
    return info


def _replace_per_rank(template, loaded):
    if isinstance(template, PerRank):
        return template
    if isinstance(template, dict) and isinstance(loaded, dict):
        return {k: _replace_per_rank(v, loaded.get(k)) for k, v in template.items()}
    if isinstance(template, (list, tuple)) and isinstance(loaded, (list, tuple)):
        return [_replace_per_rank(t, l) for t, l in zip(template, loaded)]
    return loaded
