"""A search space over job-spec fields, addressed by their `--set` paths (pipeline/field_paths.py:
a regularizer by its kind, `regularization.r1.gamma`), and drawing trials.

Trials are drawn here, not by Tune's variant generator, so that `--dry-run` shows, and validates,
exactly the trials that will run: `trials` random draws (seeded), each crossed with every `grid`
combination. Tune then runs that list as given (driver.py).
"""
from __future__ import annotations

import copy
import itertools
import math
import random
from typing import Any

from pipeline.field_paths import AddressError, set_field  # noqa: F401 (AddressError: the space's error too)


def apply_assignments(raw: dict, assignments: dict[str, Any]) -> dict:
    """A deep copy of `raw` with every path set to its value."""
    out = copy.deepcopy(raw)
    for path, value in assignments.items():
        set_field(out, path, value)
    return out


# -- drawing trials ---------------------------------------------------------------------------------
def sample(domain, rng: random.Random) -> Any:
    """One value of a random domain (uniform, loguniform or choice)."""
    if domain.uniform is not None:
        lo, hi = domain.uniform
        return rng.uniform(lo, hi)
    if domain.loguniform is not None:
        lo, hi = domain.loguniform
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return copy.deepcopy(rng.choice(domain.choice))


def draw_trials(space: dict, trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` seeded draws of the random domains, each crossed with every grid combination (in
    the order the grid lists them): trials × Π|grid| assignments of path → value."""
    grid_paths = [p for p, d in space.items() if d.grid is not None]
    random_paths = [p for p, d in space.items() if d.grid is None]
    combos = list(itertools.product(*(space[p].grid for p in grid_paths))) or [()]
    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        drawn = {p: sample(space[p], rng) for p in random_paths}
        for combo in combos:
            values = {**drawn, **dict(zip(grid_paths, copy.deepcopy(list(combo))))}
            out.append({p: values[p] for p in space})  # the search file's order, for tables
    return out


MAX_PROBE_COMBOS = 256


def probes(space: dict) -> list[dict[str, Any]]:
    """Assignments that cover what the space can produce, for validation before anything starts:
    both ends and the middle of each range (the middle catches a float range on an integer field),
    every choice and grid value. All combinations when there are few; otherwise each field's
    values with the others at their first value."""
    values = {p: _probe_values(d) for p, d in space.items()}
    paths = list(values)
    if math.prod(len(v) for v in values.values()) <= MAX_PROBE_COMBOS:
        return [dict(zip(paths, combo)) for combo in itertools.product(*(values[p] for p in paths))]
    first = {p: v[0] for p, v in values.items()}
    return [{**first, p: v} for p in paths for v in values[p]]


def _probe_values(domain) -> list[Any]:
    if domain.uniform is not None:
        lo, hi = domain.uniform
        return [lo, (lo + hi) / 2, hi]
    if domain.loguniform is not None:
        lo, hi = domain.loguniform
        return [lo, math.sqrt(lo * hi), hi]
    return list(domain.choice if domain.choice is not None else domain.grid)
