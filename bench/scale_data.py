"""The data set of bench/scale.py: N x 1,000 generated 8x8 images packed by our own `pack`, built
once into a local cache folder and uploaded to a fresh S3 endpoint on every run.

Why a cache and not a persistent endpoint: moto's server keeps its objects in its own process (or
temporary files it deletes on exit) and has no state folder to reopen, so the shards are packed
once (about 3.5 CPU-minutes per 1,000 shards) and only copied into each new moto (seconds).

Why 8x8: one sample is then 2 KiB in the tar (a 512-byte header and one 512-byte block for each
of the png and the cls member), so 1,000,000 samples are about 2 GB; the costs under test grow
with samples and shards, not with pixels.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIDE = 8
PER_SHARD = 1000
CACHE = os.path.expanduser("~/.cache/ganpipe-bench/scale")


def cache_folder(shards: int) -> str:
    return os.path.join(CACHE, f"{shards}x{PER_SHARD}-{SIDE}px")


def images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct small images: a colour ramp per image plus noise (pure noise would be the
    worst case for PNG; ramps keep the files near what small real images compress to)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (count, 1, 1, 3))
    ramp = np.arange(SIDE)[None, :, None, None] * rng.integers(-16, 17, (count, 1, 1, 3))
    noise = rng.integers(-8, 9, (count, SIDE, SIDE, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8), rng.integers(0, 10, count)


def build(shards: int, log=print) -> str:
    """The packed folder for `shards` shards, packed now unless the cache already holds it."""
    from pipeline.data.pack import pack

    folder = cache_folder(shards)
    if os.path.exists(os.path.join(folder, "manifest.json")):
        return folder
    os.makedirs(CACHE, exist_ok=True)
    npz = folder + ".npz"
    pixels, labels = images(shards * PER_SHARD)
    np.savez(npz, images=pixels, labels=labels)
    del pixels
    log(f"packing {shards * PER_SHARD:,} images into {shards} shards at {folder} (once; about {shards * 0.22:.0f} CPU-s)")
    pack(npz, folder, shard_size=PER_SHARD, resolution=SIDE, progress=False)  # manifest last: a cut build re-packs
    os.remove(npz)
    return folder


def upload(folder: str, client, bucket: str, prefix: str = "shards", threads: int = 4) -> dict:
    """Copy every shard and the manifest to s3://bucket/prefix/. Returns the manifest."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    names = [s["name"] for s in manifest["shards"]] + ["manifest.json"]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda n: client.upload_file(os.path.join(folder, n), bucket, f"{prefix}/{n}"), names))
    return manifest


def subset_root(client, bucket: str, manifest: dict, count: int, prefix: str = "shards") -> str:
    """s3://bucket/n<count>: a manifest of the first `count` shards that points at the shared shard
    prefix (shards_root), so 100, 300 and 1,000 shards are measured without a copy."""
    chosen = manifest["shards"][:count]
    subset = {
        **manifest,
        "shards": chosen,
        "num_samples": sum(s["samples"] for s in chosen),
        "total_bytes": sum(s["bytes"] for s in chosen),
        "shards_root": f"s3://{bucket}/{prefix}",
    }
    body = (json.dumps(subset, indent=2, sort_keys=True) + "\n").encode()
    client.put_object(Bucket=bucket, Key=f"n{count}/manifest.json", Body=body)
    return f"s3://{bucket}/n{count}"
