"""Collectives the training loop runs between ranks, and the window of step metrics between log steps.

Every function here is a no-op with one process (no process group), so the same code runs in a
single-process bench or test. Every rank must call them at the same steps, in the same order.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, returned as a new tensor on t's device (t itself is left alone)."""
    if not initialized():
        return t.detach().clone()
    on = _collective_device()
    out = t.detach().to(on, copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), indexed by rank."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class MetricsWindow:
    """Running sums of step stats between two log steps (tensors stay on device until then). Means are
    per key over the steps that produced it: a lazy penalty seen every 16th step averages its own values."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, stats: dict) -> None:
        # Sums stay tensors (on the GPU when training there): no host sync per step, one per log step.
        self.n += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v))
            self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self, all_reduce, world: int, totals: dict[str, float] | None = None) -> dict[str, float]:
        """Per-key means averaged over ranks, plus `totals` summed over ranks, in one collective."""
        keys = sorted(self.sums)
        totals = totals or {}
        values = [float(self.sums[k]) / self.counts[k] for k in keys] + [float(v) for v in totals.values()]
        reduced = all_reduce(torch.tensor(values, dtype=torch.float64)).tolist()
        means = {k: v / world for k, v in zip(keys, reduced)}
        return {**means, **dict(zip(totals, reduced[len(keys):]))}

    def rate(self, global_batch: int) -> float:
        return self.n * global_batch / max(time.perf_counter() - self.t0, 1e-9)
