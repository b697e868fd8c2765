"""A search space over job-spec fields: addressing a field by its `--set` path, and drawing trials.

Paths are the ones `--set` takes (`optim.d.lr`, `loss.kind`, `train.steps`), plus one step that
`--set` cannot take: inside `regularization` (a list), the next segment names an entry by its
`kind` (`regularization.r1.gamma`, `regularization.ema.beta`). Weight penalties may appear once per
target, so `regularization.l2:generator.weight` picks one of two `l2` entries. A kind the job does
not have yet is added (`regularization.r2.gamma` adds an R2 penalty to a job without one).

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

from pipeline.gan.config import Regularizer

LIST_BY_KIND = "regularization"


class AddressError(ValueError):
    """A path that does not lead to a field of the job."""


# -- addressing ----------------------------------------------------------------------------------------
def _entry_models() -> dict[str, type]:
    """kind → the regularizer's pydantic model (for the aliases of its fields)."""
    from typing import get_args

    union = get_args(Regularizer)[0]
    return {m.model_fields["kind"].annotation.__args__[0]: m for m in get_args(union)}


def _aliases(kind: str, field: str) -> set[str]:
    """Every accepted name of `field` on a `kind` entry: R1's strength is `weight` or `gamma`."""
    from pydantic import AliasChoices

    model = _entry_models().get(kind)
    if model is None:
        return {field}
    for name, info in model.model_fields.items():
        choices = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else []
        names = {name, *[c for c in choices if isinstance(c, str)]}
        if field in names:
            return names
    return {field}


def _pick_entry(entries: list, selector: str, path: str) -> dict:
    """The regularization entry `selector` (`kind`, `kind:target` or an index) names; added when absent."""
    if selector.isdigit():
        index = int(selector)
        if index >= len(entries):
            raise AddressError(f"{path}: the job has {len(entries)} regularization entries, no [{index}]")
        return entries[index]
    kind, _, target = selector.partition(":")
    if kind not in _entry_models():
        raise AddressError(f"{path}: unknown regularizer kind {kind!r}; allowed: {', '.join(sorted(_entry_models()))}")
    found = [e for e in entries if isinstance(e, dict) and e.get("kind") == kind and (not target or e.get("target") == target)]
    if len(found) > 1:
        targets = ", ".join(f"{kind}:{e.get('target')}" for e in found)
        raise AddressError(f"{path}: the job has {len(found)} `{kind}` entries; name one by target ({targets})")
    if found:
        return found[0]
    entry = {"kind": kind, **({"target": target} if target else {})}
    entries.append(entry)
    return entry


def set_field(raw: dict, path: str, value: Any) -> dict:
    """Set `path` to `value` in the raw job mapping (in place; returned for chaining)."""
    parts = path.split(".")
    if not all(parts):
        raise AddressError(f"{path!r}: empty segment in the field path")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[:depth])  # the section `part` is looked up in
        if isinstance(node, list):
            if here != LIST_BY_KIND:
                raise AddressError(f"{path}: `{here}` is a list of values, not of sections")
            node = _pick_entry(node, part, path)
        elif isinstance(node, dict):
            if node.get(part) is None:  # absent, or `eval: null`: the section is created
                node[part] = [] if (depth == 0 and part == LIST_BY_KIND) else {}
            node = node[part]
        else:
            raise AddressError(f"{path}: `{here}` is a value, not a section")
    leaf, here = parts[-1], ".".join(parts[:-1])
    if isinstance(node, list):
        raise AddressError(f"{path}: `{here}` is a list; name an entry by kind (e.g. regularization.r1.gamma)")
    if not isinstance(node, dict):
        raise AddressError(f"{path}: `{here}` is a value, not a section")
    if parts[0] == LIST_BY_KIND and "kind" in node:
        # R1's `gamma` and `weight` are one field: setting one must drop the other, or pydantic
        # would silently keep whichever name it reads first.
        for other in _aliases(node["kind"], leaf) - {leaf}:
            node.pop(other, None)
    node[leaf] = value
    return raw


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
