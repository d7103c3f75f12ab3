"""One rank of tests/interop/test_distributed.py, started by torchrun:
    dist_worker.py MODE DIR   (MODE: save, load, die)
save: a state with replicated, sharded (rows split over the ranks) and per-rank entries;
load: a zeroed template of the same structure for this world size, filled and checked;
die:  rank 1 exits before saving, so rank 0's save must fail naming it."""
import json
import os
import sys

import torch
import torch.distributed as dist

import ckpt.distributed as cd

ROWS, DIM = 12, 5


def full_embedding():
    return torch.arange(ROWS * DIM, dtype=torch.float64).view(ROWS, DIM) / 7


def rows_of(rank, world):
    per = -(-ROWS // world)
    lo = min(ROWS, rank * per)
    return lo, min(ROWS, lo + per)


def model_state():
    g = torch.Generator().manual_seed(3)
    return {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(9)}


def state_for(rank, world, zero):
    lo, hi = rows_of(rank, world)
    emb = full_embedding()[lo:hi].clone()
    model = model_state()
    if zero:
        emb.zero_()
        model = {k: torch.zeros_like(v) for k, v in model.items()}
    return {"model": model,
            "emb": cd.Shard(emb, offsets=(lo, 0), global_shape=(ROWS, DIM)),
            "rng": cd.PerRank(torch.full((3,), 0.0 if zero else float(100 + rank))),
            "step": 0 if zero else 41,
            "notes": {"lr": 0.0 if zero else 0.125, "tags": [] if zero else ["a", "b"]}}


def main():
    mode, path = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {"rank": rank}
    if mode == "save":
        out["result"] = cd.save(state_for(rank, world, zero=False), path)
    elif mode == "die":
        if rank == 1:
            os._exit(3)
        try:
            cd.save(state_for(rank, world, zero=False), path, timeout=20)
            out["error"] = None
        except Exception as e:  # noqa: BLE001 - the message is what the test checks
            out["error"] = f"{type(e).__name__}: {e}"
    else:
        template = state_for(rank, world, zero=True)
        emb = template["emb"].local
        got = cd.load(template, path)
        lo, hi = rows_of(rank, world)
        out["emb_exact"] = bool(torch.equal(emb, full_embedding()[lo:hi]))
        out["emb_in_place"] = got["emb"].local is emb
        out["model_exact"] = all(torch.equal(got["model"][k], v) for k, v in model_state().items())
        out["model_in_place"] = got["model"]["fc.weight"] is template["model"]["fc.weight"]
        out["step"] = got["step"]
        out["notes"] = got["notes"]
        out["saved_world_size"] = got.saved_world_size
        rng = got["rng"]
        out["rng"] = rng.tolist() if torch.is_tensor(rng) else None
        out["per_rank"] = {k: [v.tolist() for v in vs] for k, vs in got.per_rank.items()}
    with open(os.path.join(os.path.dirname(path), f"{mode}-{world}-{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
