"""Epoch mode arithmetic: which samples each (rank, loader worker) reads, in which order.

Pure functions of (shard sample counts, seed, epoch, layout); every rank and every worker derives
the same plan on its own, so nothing has to be communicated and a resume re-derives it exactly.

The epoch's global sequence: shards in an order permuted by (seed, epoch); inside each shard,
consecutive windows of `window` samples (the shuffle buffer) permuted by (seed, epoch, shard,
window). Windows keep memory bounded by one window of raw bytes while reading a tar front to back.
Rank r owns the contiguous slice [r*n*B, (r+1)*n*B) of that sequence, n = batches per rank:
  drop: n = N // (world*B), the last N - world*n*B samples of the epoch are not used;
  pad:  n = ceil(N / (world*B)), positions past N wrap to the start of the same epoch's sequence.
Inside a rank, loader worker w owns a contiguous run of c_w = n//W + (w < n%W) batches. torch's
DataLoader hands out batches round-robin over its workers, skipping exhausted ones, so the rank's
j-th batch is worker (j % W)'s (j // W)-th batch (the workers with one extra batch come first in
the cycle). After k consumed batches, worker w has delivered ceil((k - w) / W) of its batches, and
the next batch is worker k % W's: a resumed DataLoader rotates its workers to start there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integer parts (seed, epoch, rank, ...); never collides by addition."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class Layout:
    world_size: int
    workers: int  # logical loader workers per rank (1 when the DataLoader runs in-process)
    batch_size: int
    tail: str  # "drop" | "pad"

    def as_dict(self) -> dict:
        return {"world_size": self.world_size, "workers": self.workers, "batch_size": self.batch_size, "tail": self.tail}


def batches_per_rank(num_samples: int, layout: Layout) -> int:
    per_step = layout.world_size * layout.batch_size
    if layout.tail == "drop":
        return num_samples // per_step
    return -(-num_samples // per_step)


def worker_batches(n: int, workers: int) -> list[tuple[int, int]]:
    """(first batch, count) of each logical worker's contiguous run within a rank's n batches."""
    runs, start = [], 0
    for w in range(workers):
        count = n // workers + (1 if w < n % workers else 0)
        runs.append((start, count))
        start += count
    return runs


def delivered(k: int, worker: int, workers: int) -> int:
    """Batches worker `worker` has delivered once the rank consumed k (round-robin delivery)."""
    return 0 if k <= worker else -(-(k - worker) // workers)


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(derive_seed(seed, epoch, 0x5A4D)).permutation(num_shards)


def window_permutation(count: int, window: int, seed: int, epoch: int, shard: int) -> np.ndarray:
    """File index of each position of one shard's epoch order (windowed shuffle; identity if window == 0)."""
    if window <= 1:
        return np.arange(count)
    out = np.empty(count, dtype=np.int64)
    for w_start in range(0, count, window):
        w_stop = min(count, w_start + window)
        rng = np.random.default_rng(derive_seed(seed, epoch, shard, w_start))
        out[w_start:w_stop] = w_start + rng.permutation(w_stop - w_start)
    return out


@dataclass(frozen=True)
class Segment:
    """Positions [start, stop) of one shard's epoch order (shard = index into the selected shards)."""

    shard: int
    start: int
    stop: int


def segments(counts: list[int], seed: int, epoch: int, begin: int, end: int) -> list[Segment]:
    """The global positions [begin, end) of the epoch sequence as per-shard runs; positions >= N
    wrap (pad mode), so one call may visit a shard twice."""
    total = sum(counts)
    order = shard_order(len(counts), seed, epoch)
    starts = np.concatenate([[0], np.cumsum([counts[s] for s in order])])
    out: list[Segment] = []
    pos = begin
    while pos < end:
        p = pos % total
        slot = int(np.searchsorted(starts, p, side="right") - 1)
        shard = int(order[slot])
        offset = p - int(starts[slot])
        take = min(counts[shard] - offset, end - pos)
        out.append(Segment(shard, offset, offset + take))
        pos += take
    return out


def worker_range(num_samples: int, layout: Layout, rank: int, worker: int, skip: int = 0) -> tuple[int, int]:
    """Global positions [begin, end) that a logical worker still has to deliver after `skip` of its batches."""
    n = batches_per_rank(num_samples, layout)
    first, count = worker_batches(n, layout.workers)[worker]
    b = layout.batch_size
    rank_start = rank * n * b
    return rank_start + (first + min(skip, count)) * b, rank_start + (first + count) * b
