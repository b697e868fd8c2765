"""Strengths that change with the step: a penalty weight, an augmentation probability, a learning rate.

    step:   0 ──warmup──▶ warmup ────────steps────────▶ warmup + steps ──────▶
    value:  0 ──linear──▶ start  ──constant/linear/cosine──▶ end ── held at end ──▶

  constant  value = start (after the warm-up; `end` is ignored and may be None)
  linear    start + (end − start)·t
  cosine    end + (start − end)·½(1 + cos πt)        half a cosine: flat at both ends
with t = (step − warmup) / steps clamped to [0, 1], so the value is held at `end` after the schedule.

The warm-up ramps every kind, `constant` included, linearly from 0 at step 0 to `start` at step
`warmup` (warmup = 0: no ramp). A schedule depends only on the step number, so every rank computes the
same value without talking to the others (DESIGN.md: every rank must take the same branches).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def schedule_value(
    kind: str,
    *,
    start: float,
    end: float | None,
    steps: int,
    warmup: int,
    step: int,
) -> float:
    """The value of a `kind` schedule at `step` (0-based count of completed steps)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    step = max(step, 0)
    if step < warmup:
        return start * step / warmup
    if kind == "constant":
        return start
    if end is None:
        raise ValueError(f"a {kind} schedule needs `end`")
    t = min((step - warmup) / steps, 1.0)
    if kind == "linear":
        return start + (end - start) * t
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))
