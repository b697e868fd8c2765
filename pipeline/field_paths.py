"""Addressing a job-spec field by its path, as `--set` and search spaces do: `optim.d.lr`,
`loss.kind`, `train.steps`, and inside `regularization` (a list) an entry by its `kind`
(`regularization.r1.gamma`, `regularization.ema.beta`) or by index (`regularization.0.weight`).
Weight penalties may appear once per target, so `regularization.l2:generator.weight` picks one of
two `l2` entries. A kind the job does not have yet is added (`regularization.r2.gamma` adds an R2
penalty to a job without one); an absent or null section is created (`eval.num_samples` after
`eval: null`).
"""
from __future__ import annotations

from typing import Any

from pipeline.gan.config import Regularizer

LIST_BY_KIND = "regularization"


class AddressError(ValueError):
    """A path that does not lead to a field of the job."""


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
