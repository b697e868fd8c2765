"""manifest.json: what a data snapshot holds, and the cheap checks run before any worker starts.

The sha256 of the manifest's bytes is the data snapshot id: training, MLflow tags and the
retraining scheduler compare it to decide whether the data changed.

Two kinds: `packed` (written by `data pack`: png at one image_size, next to its shards) and
`indexed` (written by `data index` over shards someone else wrote: image_size null, the image and
label members recorded, and `shards_root` when the manifest lives apart from the shards).
"""

from __future__ import annotations

import hashlib
import json

from braceexpand import braceexpand

from pipeline.data import store
from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.stat_many import stat_many

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format", "image_size", "num_samples", "shards", "total_bytes")


def load_manifest(root: str, endpoint_url: str | None = None) -> tuple[dict, str]:
    """(manifest, snapshot id): the parsed manifest.json under root and the sha256 hex of its bytes."""
    url = store.join(root, MANIFEST_NAME)
    try:
        raw = store.read_bytes(url, endpoint_url=endpoint_url)
    except FileNotFoundError as exc:
        raise DataError(f"no {MANIFEST_NAME} at {url}: pack images (ganpipe data pack) or index existing shards (ganpipe data index) first") from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{url} is not valid JSON: {exc}") from exc
    validate_manifest(manifest, where=url)
    return manifest, hashlib.sha256(raw).hexdigest()


def validate_manifest(manifest: dict, where: str = MANIFEST_NAME) -> None:
    if not isinstance(manifest, dict):
        raise DataError(f"{where}: expected a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{where}: missing keys {missing}")
    if manifest["format"] != FORMAT_VERSION:
        raise DataError(f"{where}: format {manifest['format']!r} is not supported (expected {FORMAT_VERSION})")
    if manifest.get("kind", "packed") not in ("packed", "indexed"):
        raise DataError(f"{where}: kind {manifest['kind']!r} is not one of packed, indexed")
    for i, shard in enumerate(manifest["shards"]):
        if not {"name", "samples", "bytes", "sha256"} <= set(shard):
            raise DataError(f"{where}: shard entry {i} lacks one of name/samples/bytes/sha256")


def manifest_kind(manifest: dict) -> str:
    return manifest.get("kind", "packed")


def manifest_resolution(manifest: dict) -> int | None:
    """Image side from the manifest's image_size ([C, H, W] with H == W, or a bare int); None for
    indexed shards, whose images come at any size and are fitted by the loader's transform."""
    size = manifest["image_size"]
    if size is None:
        return None
    return int(size[-1]) if isinstance(size, (list, tuple)) else int(size)


def shard_url(root: str, manifest: dict, entry: dict) -> str:
    """Where one shard is: under the manifest's `shards_root` when it names one, else next to it."""
    return store.join(manifest.get("shards_root") or root, entry["name"])


def selected_shards(spec: DataSpec, manifest: dict) -> list[dict]:
    """Manifest entries of the shards the spec selects, in pattern order (manifest order by default)."""
    by_name = {s["name"]: s for s in manifest["shards"]}
    if spec.shards is None:
        chosen = list(manifest["shards"])
    else:
        names = list(braceexpand(spec.shards))
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise DataError(f"shards pattern {spec.shards!r} names shards not in the manifest: {unknown}")
        chosen = [by_name[n] for n in names]
    if not chosen:
        raise DataError(f"no shards selected under {spec.root}")
    return chosen


def shard_urls(spec: DataSpec, manifest: dict) -> list[str]:
    """Full URLs (local paths or s3://...) of the selected shards."""
    return [shard_url(spec.root, manifest, s) for s in selected_shards(spec, manifest)]


def check_shards(spec: DataSpec) -> dict:
    """Fail fast, before Ray workers start: every selected shard exists with the manifest's size, and
    the manifest's image size is the spec's resolution. Lists every problem at once. Returns the manifest."""
    manifest, _ = load_manifest(spec.root, endpoint_url=spec.endpoint_url)
    problems = member_problems(spec, manifest)
    found = manifest_resolution(manifest)
    if found is not None and found != spec.resolution:
        problems.append(f"resolution: spec asks for {spec.resolution}, the manifest's images are {found}x{found}")
    shards = selected_shards(spec, manifest)
    urls = [shard_url(spec.root, manifest, s) for s in shards]
    # One LIST page per 1,000 shards rather than a HEAD each (stat_many.py; bench/scale.py measured it).
    infos = stat_many(urls, endpoint_url=spec.endpoint_url)
    for shard, url, info in zip(shards, urls, infos):
        if info is None:
            problems.append(f"missing shard: {url}")
        elif info.size != shard["bytes"]:
            problems.append(f"size mismatch: {url} is {info.size} bytes, the manifest says {shard['bytes']}")
    if problems:
        raise DataError(f"{len(problems)} problem(s) with the data under {spec.root}:\n  " + "\n  ".join(problems))
    return manifest


def member_problems(spec: DataSpec, manifest: dict) -> list[str]:
    """The spec's image_key/label_key against the members the shards hold (per the manifest)."""
    problems = []
    if manifest_kind(manifest) == "packed":
        if spec.image_key not in ("auto", "png"):
            problems.append(f"image_key: {spec.image_key!r}, but packed shards hold png images (use auto or png)")
        if spec.label_key.startswith("json."):
            problems.append(f"label_key: {spec.label_key!r}, but packed shards keep labels in cls (use auto or cls)")
        return problems
    members = manifest.get("members", {})
    if spec.image_key != "auto" and spec.image_key not in members:
        problems.append(f"image_key: {spec.image_key!r} is not a member of these shards (members: {sorted(members)})")
    wanted = "json" if spec.label_key.startswith("json.") else spec.label_key
    if wanted not in ("auto", "none") and wanted not in members:
        problems.append(f"label_key: {spec.label_key!r} needs a {wanted} member; these shards hold {sorted(members)}")
    return problems


def class_names(manifest: dict) -> list[str] | None:
    """The class of each label value 0..K-1, or None when the data have no such labels: packed shards
    list their classes (folder names, or the label values); indexed shards whose labels are exactly
    the integers 0..K-1 are named by index."""
    if manifest.get("classes"):
        return [str(c) for c in manifest["classes"]]
    values = (manifest.get("labels") or {}).get("values")
    if values and all(isinstance(v, int) for v in values) and sorted(values) == list(range(len(values))):
        return [str(v) for v in values]
    return None
