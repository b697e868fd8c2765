"""G's and D's Adam, with a learning rate and β2 that may follow a schedule (R3GAN's recipe).

Adam reads `lr` and `betas` from its param group at every `step()`, so a schedule is applied by
writing them there before the step: no optimizer is rebuilt and its moment estimates carry on. The
values depend on the step alone (pipeline/gan/schedules.py), so every rank sets the same ones and a
resumed run sets what an uninterrupted one would have. D's values go through `lazy_adam` when lazy
regularization gives it an extra optimizer step (pipeline/gan/penalties.py).
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.gan.config import AdamSpec, OptimSpec
from pipeline.gan.penalties import lazy_adam
from pipeline.train.regularization import strength


def adam_at(spec: AdamSpec, step: int, *, lazy_every: int = 1) -> tuple[float, tuple[float, float]]:
    """(lr, (β1, β2)) of `spec` at `step`, adjusted for a lazy-regularization interval."""
    betas = (spec.betas[0], strength(spec.betas[1], step))
    return lazy_adam(strength(spec.lr, step), betas, lazy_every)


def is_scheduled(spec: AdamSpec) -> bool:
    return not (isinstance(spec.lr, (int, float)) and isinstance(spec.betas[1], (int, float)))


def build_adam(module: nn.Module, spec: AdamSpec, *, lazy_every: int = 1) -> torch.optim.Adam:
    lr, betas = adam_at(spec, 0, lazy_every=lazy_every)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas)


class OptimizerSchedule:
    """Sets both optimizers' lr and betas for a step; returns the values to log (scheduled ones only)."""

    def __init__(self, optim: OptimSpec, *, lazy_every: int):
        self.optim, self.lazy_every = optim, lazy_every
        self.scheduled = {net: is_scheduled(getattr(optim, net)) for net in ("g", "d")}

    def apply(self, step: int, *, g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer) -> dict[str, float]:
        logged: dict[str, float] = {}
        for net, opt, every in (("g", g_opt, 1), ("d", d_opt, self.lazy_every)):
            if not self.scheduled[net]:
                continue
            lr, betas = adam_at(getattr(self.optim, net), step, lazy_every=every)
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, betas
            logged.update({f"optim/{net}_lr": lr, f"optim/{net}_beta2": betas[1]})
        return logged
