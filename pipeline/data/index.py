"""index: WebDataset shards someone else wrote -> the manifest.json training needs.

Every shard is read once, front to back and streaming (one sample in memory per shard in flight),
a few shards at a time: per shard its sample count, bytes and sha256 (so `verify` and resume can
trust it), which image and label members its samples carry, and the sizes of its images (from
each image's header: no pixel is decoded). Shards are not rewritten or copied.

Resumable: each indexed shard is saved to a state kept beside the output (index_state.py: JSON
lines under <out>/.index-state/) with the shard's size and version (S3 ETag, local mtime) and the
key choices. A rerun, on this machine or another, reuses every line whose shard still has that
size and version, and reads only the rest. The state is removed once the manifest is written.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from pipeline.data import store
from pipeline.data.decode import IMAGE_KEYS, label_from_json, open_image
from pipeline.data.errors import CorruptSampleError, DataError
from pipeline.data.index_state import IndexState
from pipeline.data.manifest import FORMAT_VERSION, load_manifest
from pipeline.data.reader import iter_shard
from pipeline.data.shard_listing import ShardListing, list_shards

MAX_LABELS = 10_000  # distinct label values recorded; past that the set is not useful as "classes"
MAX_EXAMPLES = 5  # keys named per shard for samples without a readable image


@dataclass
class IndexReport:
    manifest: dict
    snapshot: str
    out: str
    read: int = 0  # shards read in this run
    reused: int = 0  # shards taken from the saved state of an earlier, interrupted run


@dataclass
class _ShardScan:
    samples: int = 0
    bytes: int = 0
    members: Counter = field(default_factory=Counter)
    image_keys: Counter = field(default_factory=Counter)
    widths: list = field(default_factory=lambda: [None, None])
    heights: list = field(default_factory=lambda: [None, None])
    shorter: Counter = field(default_factory=Counter)  # power-of-two bucket -> images
    shortest: list = field(default_factory=lambda: [None, None])  # min, max of the shorter side
    labelled: int = 0
    labels: set = field(default_factory=set)
    unreadable: int = 0
    examples: list = field(default_factory=list)
    sha256: str = ""


def index(
    shards: str,
    *,
    out: str | None = None,
    endpoint_url: str | None = None,
    image_key: str = "auto",
    label_key: str = "auto",
    parallel: int = 8,
    cache_dir: str | None = None,  # ignored: the resume state moved beside the output; kept for older callers
    on_listed: Callable[[int], None] | None = None,
    on_shard: Callable[[str, bool], None] | None = None,
) -> IndexReport:
    """Index SHARDS (brace pattern, s3:// prefix or folder) and write manifest.json to `out`
    (default: the shards' folder or prefix). `on_listed(total)` then `on_shard(name, reused)` per
    shard drive a progress bar. Unreadable shards are all named in one DataError, after the
    readable ones are saved to the resume state; no manifest is written then."""
    image_key = image_key.strip().lower().lstrip(".")
    if label_key not in ("auto", "none", "cls") and not (label_key.startswith("json.") and all(label_key.split(".")[1:])):
        raise DataError(f"--label-key must be auto, none, cls or json.<field> (e.g. json.label); got {label_key!r}")
    listing = list_shards(shards, endpoint_url=endpoint_url)
    out = (out or listing.base).rstrip("/")
    if not store.is_s3(out):
        out = os.path.abspath(os.path.expanduser(out))
    state = IndexState(out, endpoint_url, image_key, label_key)
    done = state.load(listing)
    if on_listed is not None:
        on_listed(len(listing.shards))
    report = IndexReport(manifest={}, snapshot="", out=out, reused=len(done))
    for name in done:
        if on_shard is not None:
            on_shard(name, True)
    todo = [n for n in listing.shards if n not in done]
    try:
        failures = _read_all(listing, todo, done, report, state, endpoint_url, image_key, label_key, parallel, on_shard)
    finally:
        state.save()  # however the run ends (failure, Ctrl-C), what it read is kept for the next
    if failures:
        raise DataError(
            f"{len(failures)} shard(s) could not be read (the other {len(done)} are saved; a rerun reads only these):\n  "
            + "\n  ".join(f"{listing.url(n)}: {reason}" for n, reason in sorted(failures.items()))
        )
    manifest = _manifest(shards, listing, out, [done[n] for n in listing.shards], image_key, label_key)
    from pipeline.data.pack import publish_manifest  # as pack does: unchanged content keeps its snapshot id

    if not store.is_s3(out):
        os.makedirs(out, exist_ok=True)
    publish_manifest(manifest, out, endpoint_url)
    state.remove()
    report.manifest, report.snapshot = load_manifest(out, endpoint_url=endpoint_url)
    return report


def _read_all(listing, todo, done, report, state, endpoint_url, image_key, label_key, parallel, on_shard) -> dict:
    failures: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="index")
    pending = {}
    queue = list(reversed(todo))
    try:
        # Keep `parallel` shards in flight, no more: a 10,000-shard prefix never queues 10,000 futures.
        while queue or pending:
            while queue and len(pending) < max(1, parallel):
                name = queue.pop()
                pending[pool.submit(scan_shard, listing.url(name), endpoint_url, image_key, label_key)] = name
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                name = pending.pop(future)
                try:
                    scan = future.result()
                except Exception as exc:  # garbled tar, access denied, vanished object: name it
                    failures[name] = f"{type(exc).__name__}: {exc}"
                    continue
                info = listing.shards[name]
                done[name] = _entry(name, scan)
                state.add(name, info.size, info.version, done[name])
                report.read += 1
                if on_shard is not None:
                    on_shard(name, False)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return failures


def scan_shard(url: str, endpoint_url: str | None, image_key: str, label_key: str) -> _ShardScan:
    """Stream one shard: count, hash, and note the members and image sizes of every sample."""
    scan = _ShardScan()
    digest = hashlib.sha256()

    def tap(chunk: bytes) -> None:
        digest.update(chunk)
        scan.bytes += len(chunk)

    wanted = IMAGE_KEYS if image_key == "auto" else (image_key,)
    for raw in iter_shard(url, endpoint_url=endpoint_url, tap=tap):
        scan.samples += 1
        members = [k for k in raw if not k.startswith("__")]
        scan.members.update(members)
        member = next((m for m in wanted if m in raw), None)
        size = None
        if member is not None:
            scan.image_keys[member] += 1
            try:
                with open_image(raw[member], member) as img:
                    size = img.size
            except Exception:  # a bad header: the sample cannot train; verify and training name it
                size = None
        if size is None:
            scan.unreadable += 1
            if len(scan.examples) < MAX_EXAMPLES:
                scan.examples.append(raw["__key__"])
        else:
            _note_size(scan, *size)
        _note_label(scan, raw, label_key, url)
    scan.sha256 = digest.hexdigest()
    return scan


def _note_size(scan: _ShardScan, w: int, h: int) -> None:
    for pair, v in ((scan.widths, w), (scan.heights, h), (scan.shortest, min(w, h))):
        pair[0] = v if pair[0] is None else min(pair[0], v)
        pair[1] = v if pair[1] is None else max(pair[1], v)
    scan.shorter[1 << (max(1, min(w, h)).bit_length() - 1)] += 1


def _note_label(scan: _ShardScan, raw: dict, label_key: str, url: str) -> None:
    if label_key == "none":
        return
    try:
        if label_key == "auto" or label_key == "cls":
            value = int(raw["cls"]) if "cls" in raw else -1
        else:
            value = label_from_json(raw, label_key, url, raw["__key__"])
    except (ValueError, CorruptSampleError):
        return  # a malformed label is the sample's problem, named by verify and training
    if value >= 0:
        scan.labelled += 1
        if len(scan.labels) < MAX_LABELS:
            scan.labels.add(value)


def _entry(name: str, scan: _ShardScan) -> dict:
    return {
        "name": name,
        "samples": scan.samples,
        "bytes": scan.bytes,
        "sha256": scan.sha256,
        "members": dict(sorted(scan.members.items())),
        "image_keys": dict(sorted(scan.image_keys.items())),
        "width": scan.widths,
        "height": scan.heights,
        "shorter_side": scan.shortest,
        "shorter_side_buckets": {str(k): v for k, v in sorted(scan.shorter.items())},
        "labelled": scan.labelled,
        "labels": sorted(scan.labels),
        "unreadable_images": scan.unreadable,
        "unreadable_examples": scan.examples,
    }


def _manifest(source: str, listing: ShardListing, out: str, entries: list[dict], image_key: str, label_key: str) -> dict:
    members, image_keys, shorter = Counter(), Counter(), Counter()
    labels: set[int] = set()
    for e in entries:
        members.update(e["members"])
        image_keys.update(e["image_keys"])
        shorter.update({int(k): v for k, v in e["shorter_side_buckets"].items()})
        labels.update(e["labels"])
    labelled = sum(e["labelled"] for e in entries)
    if label_key == "auto":
        label_key = "cls" if labelled else "none"
    elif label_key != "none" and not labelled:
        raise DataError(f"--label-key {label_key}: no sample of the {len(entries)} shard(s) has that label")
    if image_key == "auto":
        if not image_keys:
            raise DataError(f"no sample has a {'/'.join(IMAGE_KEYS)} member (members found: {sorted(members)}); name one with --image-key")
        # One format throughout: name it. Mixed formats: each sample uses the first it has.
        image_key = next(iter(image_keys)) if len(image_keys) == 1 else "auto"
    elif not image_keys:
        raise DataError(f"--image-key {image_key}: no sample has that member (members found: {sorted(members)})")

    def span(field_name: str) -> list:
        values = [v for e in entries for v in e[field_name] if v is not None]  # each entry: [min, max]
        return [min(values), max(values)] if values else [None, None]

    manifest = {
        "format": FORMAT_VERSION,
        "kind": "indexed",
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image_size": None,  # any size: the job's transform fits each image to its resolution
        "image_key": image_key,
        "label_key": None if label_key == "none" else label_key,
        "members": dict(sorted(members.items())),
        "image_sizes": {
            "width": span("width"),
            "height": span("height"),
            "shorter_side": span("shorter_side"),
            # images per power-of-two bucket of the shorter side ("64": 64..127 px)
            "shorter_side_buckets": {str(k): v for k, v in sorted(shorter.items())},
        },
        "labels": {"labelled": labelled, "values": sorted(labels) if len(labels) < MAX_LABELS else None},
        "unreadable_images": sum(e["unreadable_images"] for e in entries),
        "num_samples": sum(e["samples"] for e in entries),
        "classes": None,
        "shards": entries,
        "total_bytes": sum(e["bytes"] for e in entries),
    }
    if listing.base.rstrip("/") != out:
        manifest["shards_root"] = listing.base  # the manifest lives apart from its shards
    return manifest
