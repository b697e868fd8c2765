"""pack: source images -> WebDataset tar shards + manifest.json, in a local folder or on S3.

Bytes are deterministic for the same input (fixed write order, fixed tar mtime, same PNG encoder),
so re-packing the same source changes nothing: identical shards are not uploaded again and the
manifest (hence the snapshot id) is kept when its content is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone

import numpy as np
import webdataset as wds
from PIL import Image

from pipeline.data import store
from pipeline.data.errors import DataError
from pipeline.data.manifest import FORMAT_VERSION, MANIFEST_NAME
from pipeline.data.sources import open_source, resize_square

# An integer mtime keeps every tar member at one 512-byte ustar header; a float (time.time(), the
# TarWriter default) forces a pax header per member, roughly doubling 1 KB PNG samples. A fixed
# value also makes the bytes reproducible.
TAR_MTIME = 1_700_000_000
# Packing order is a fixed permutation of the source so that each shard is a random sample of the
# whole set (folder sources arrive sorted by class); a fixed seed keeps the bytes deterministic.
PACK_ORDER_SEED = 0


def pack(
    source: str,
    out: str,
    *,
    shard_size: int = 1000,
    resolution: int = 32,
    endpoint_url: str | None = None,
    progress: bool = True,
    multipart_threshold: int = 64 * 1024 * 1024,
) -> dict:
    """Pack `source` ('digits', a folder of images, or an .npz) into shards under `out` (folder or
    s3://bucket/prefix). Returns the manifest written (or kept, when unchanged)."""
    manifest, _ = pack_with_report(
        source, out, shard_size=shard_size, resolution=resolution, endpoint_url=endpoint_url,
        progress=progress, multipart_threshold=multipart_threshold,
    )
    return manifest


def pack_with_report(
    source: str,
    out: str,
    *,
    shard_size: int = 1000,
    resolution: int = 32,
    endpoint_url: str | None = None,
    progress: bool = True,
    multipart_threshold: int = 64 * 1024 * 1024,
) -> tuple[dict, int]:
    """pack(), plus how many shards were actually sent (0 for a local folder or an unchanged re-pack)."""
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    if resolution < 8 or resolution & (resolution - 1):
        raise DataError(f"resolution must be a power of two >= 8, got {resolution}")
    src = open_source(source)
    order = np.random.default_rng(PACK_ORDER_SEED).permutation(src.count)
    remote = store.is_s3(out)
    staging = tempfile.mkdtemp(prefix="ganpipe-pack-") if remote else out
    os.makedirs(staging, exist_ok=True)
    shard_entries, uploaded = [], 0
    try:
        with _progress(progress) as bar:
            task = bar.add_task(f"packing {src.name}", total=src.count)
            for shard_no, start in enumerate(range(0, src.count, shard_size)):
                name = f"shard-{shard_no:06d}.tar"
                indices = order[start : start + shard_size]
                entry, local_path = _write_shard(src, indices, resolution, staging, name, remote)
                shard_entries.append(entry)
                if remote:
                    from pipeline.data import s3

                    sent = s3.upload_if_changed(
                        local_path, store.join(out, name), entry["sha256"],
                        endpoint_url=endpoint_url, multipart_threshold=multipart_threshold,
                    )
                    uploaded += int(sent)
                    os.remove(local_path)  # keep local disk use at one shard while uploading
                bar.advance(task, len(indices))
        manifest = {
            "format": FORMAT_VERSION,
            "source": src.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "image_size": [3, resolution, resolution],
            "num_samples": int(src.count),
            "classes": src.classes,
            "shards": shard_entries,
            "total_bytes": sum(s["bytes"] for s in shard_entries),
        }
        # The manifest goes last: a reader never sees a manifest that names shards not yet written.
        manifest = publish_manifest(manifest, out, endpoint_url)
    finally:
        if remote:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest, uploaded


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _write_shard(src, indices, resolution: int, folder: str, name: str, remote: bool) -> tuple[dict, str]:
    final = os.path.join(folder, name)
    tmp = final + ".partial"
    with open(tmp, "wb") as f:
        with wds.TarWriter(f, mtime=TAR_MTIME) as writer:
            for i in indices:
                array, label = src.load(int(i))
                sample = {"__key__": f"{int(i):08d}", "png": encode_png(resize_square(array, resolution))}
                if label is not None:
                    sample["cls"] = str(label).encode("ascii")
                writer.write(sample)
    digest, size = _sha256_file(tmp)
    if not remote and os.path.exists(final) and _sha256_file(final)[0] == digest:
        os.remove(tmp)  # identical shard already there: leave its mtime and readers alone
    else:
        os.replace(tmp, final)
    return {"name": name, "samples": int(len(indices)), "bytes": size, "sha256": digest}, final


def _sha256_file(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _same_content(a: dict, b: dict) -> bool:
    strip = lambda m: {k: v for k, v in m.items() if k != "created"}  # noqa: E731
    return strip(a) == strip(b)


def publish_manifest(manifest: dict, out: str, endpoint_url: str | None) -> dict:
    url = store.join(out, MANIFEST_NAME)
    try:
        existing = json.loads(store.read_bytes(url, endpoint_url=endpoint_url))
    except (FileNotFoundError, ValueError):
        existing = None
    if existing is not None and _same_content(existing, manifest):
        return existing  # unchanged data keeps its snapshot id (the manifest's sha256)
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if store.is_s3(out):
        from pipeline.data import s3

        s3.put_bytes(url, body, endpoint_url=endpoint_url)
    else:
        tmp = url + ".partial"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, url)
    return manifest


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
