"""The job's regularization list, turned into what the step loop asks for at a given step.

This is the one place that reads regularizer specs at run time: the loop asks "which weight
penalties on D, at what strength, now?" and never looks at a `kind` itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from pipeline.gan import config as C
from pipeline.gan.penalties import l1_penalty, l2_penalty, orthogonal_penalty
from pipeline.gan.schedules import schedule_value

WEIGHT_PENALTY_FNS: dict[str, Callable[[nn.Module], Tensor]] = {
    "l1": l1_penalty,
    "l2": l2_penalty,
    "orthogonal": orthogonal_penalty,
}


def strength(value: C.Strength, step: int) -> float:
    if isinstance(value, C.Schedule):
        end = value.start if value.end is None else value.end
        return schedule_value(value.kind, start=value.start, end=end, steps=value.steps, warmup=value.warmup, step=step)
    return float(value)


def _hits(target: str, net: str) -> bool:
    return target == "both" or target == net


@dataclass(frozen=True)
class Regularization:
    entries: tuple = ()

    @classmethod
    def from_specs(cls, regs: tuple) -> "Regularization":
        return cls(entries=tuple(regs))

    def get(self, kind: str):
        """The entry of a single-instance kind (ema, lecam, augmentations...), or None."""
        return next((r for r in self.entries if r.kind == kind), None)

    def weight_penalty(self, net: str, module: nn.Module, step: int) -> tuple[Tensor | float, dict[str, float]]:
        """Σ λ_i(step)·penalty_i(module) over entries aimed at `net` ("generator" | "discriminator")."""
        total: Tensor | float = 0.0
        logged: dict[str, float] = {}
        for r in self.entries:
            if isinstance(r, C.WEIGHT_PENALTIES) and _hits(r.target, net):
                lam = strength(r.weight, step)
                logged[f"reg/{r.kind}_{net[0]}_weight"] = lam
                if lam:
                    total = total + lam * WEIGHT_PENALTY_FNS[r.kind](module)
        return total, logged

    @property
    def gradient_penalties(self) -> tuple:
        return tuple(r for r in self.entries if isinstance(r, C.GRADIENT_PENALTIES))

    @property
    def lazy_every(self) -> int:
        """The D reg phase's interval (1 = penalties go into D's main step; check_regularization
        guarantees at most one interval > 1)."""
        return max((r.every for r in self.gradient_penalties), default=1)

    def spectral_norm_targets(self) -> set[str]:
        r = self.get("spectral_norm")
        if r is None:
            return set()
        return {"generator", "discriminator"} if r.target == "both" else {r.target}
