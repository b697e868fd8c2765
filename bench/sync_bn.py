"""What global batch norm costs a DDP pair, measured inside one pair of processes.

    .venv/bin/python bench/sync_bn.py              # about 2 minutes on 2 quiet cores
    .venv/bin/python bench/sync_bn.py --cycles 3   # a smoke run

bench/train.py compares whole `ganpipe train` runs minutes apart, and on this shared VM their speed
drifts by ±30 % over minutes, so its (b)/(b') ratio moves from run to run. Here the variants share
two processes (gloo, 1 torch thread each, the quickstart's recipe as bench/train_reference.py writes
it, data in memory) and take turns by window of `--window` steps, so every variant sees the same
moments of the host:

- per-rank `BatchNorm2d` (the bare DDP pair's maths: `model.sync_batch_norm: false`);
- `GlobalBatchNorm2d` over gloo, as `ganpipe train` runs it (pipeline/gan/sync_bn.py, the default);
- `GlobalBatchNorm2d` whose "all-reduce" returns the rank's own sums: its arithmetic alone, no
  collective and so no waiting for the other rank (the maths of one rank: a speed probe only).

Each variant has its own G, D, optimizers and EMA. Rank 0's median window (the first cycle is
warm-up) and its ratio to per-rank batch norm are printed; issue 17's goal for global against
per-rank is ≥ 0.9.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bench.train import JOB, load_images  # noqa: E402
from bench.train_reference import free_port, parts, recipe_from_job  # noqa: E402
from pipeline.gan.sync_bn import with_global_batch_norm  # noqa: E402
from pipeline.spec import load_job  # noqa: E402
from pipeline.train.dist import all_reduce_sum  # noqa: E402

GLOBAL_BATCH = 64
VARIANTS = ("per-rank BatchNorm2d", "global, over gloo (ganpipe's default)", "global, arithmetic alone (no collective)")


def _own_sums(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _hook(variant: str):
    """How each variant edits G before DDP wraps it."""
    if variant == VARIANTS[0]:
        return None
    reduce = all_reduce_sum if variant == VARIANTS[1] else _own_sums
    return lambda g: with_global_batch_norm(g, reduce)


def _rank(rank: int, world: int, port: int, recipe, images: torch.Tensor, cycles: int, window: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pairs = {v: parts(recipe, world=world, g_hook=_hook(v)) for v in VARIANTS}
        n = GLOBAL_BATCH // world
        pick = torch.Generator().manual_seed(rank)
        seconds = {v: [] for v in VARIANTS}
        step = 0
        for _ in range(cycles):
            for v in VARIANTS:
                t0 = time.perf_counter()
                for _ in range(window):
                    pairs[v].step(recipe, step, images[torch.randint(len(images), (n,), generator=pick)], n, GLOBAL_BATCH)
                    step += 1
                seconds[v].append(time.perf_counter() - t0)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(seconds, f)
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=9, help="turns of every variant; the first is warm-up")
    ap.add_argument("--window", type=int, default=10, help="steps per turn")
    args = ap.parse_args()
    import torch.multiprocessing as mp

    from pipeline.data.pack import pack

    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "digits"
        pack("digits", str(data), shard_size=200, resolution=32, progress=False)
        recipe = recipe_from_job(load_job(JOB, [f"data.root={data}"]))
        images = load_images(data, recipe.resolution, 1792)
        out = os.path.join(work, "seconds.json")
        mp.spawn(_rank, args=(2, free_port(), recipe, images, args.cycles, args.window, out), nprocs=2, join=True)
        with open(out) as f:
            seconds = json.load(f)
    per_s = {v: args.window * GLOBAL_BATCH / statistics.median(seconds[v][1:]) for v in VARIANTS}
    print(f"\n2 processes, {args.cycles - 1} turns of {args.window} steps per variant after one warm-up turn\n")
    print("| G's batch norm | samples/s | against per-rank |\n|---|---:|---:|")
    for v in VARIANTS:
        print(f"| {v} | {per_s[v]:,.0f} | {per_s[v] / per_s[VARIANTS[0]]:.2f} |")


if __name__ == "__main__":
    main()
