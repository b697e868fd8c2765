"""Data-plane throughput: decoded samples/s through several loaders over the same shards.

    .venv/bin/python bench/data.py [--suite packed|foreign|all] [--samples 21564] [--naive 2000] [--batch 256] [--rounds 3]

Suite `packed` (shards written by `ganpipe data pack`, 32x32 PNG):
(a) our pipeline (make_batches, epoch mode) streaming shards from an S3 endpoint (moto's server,
    in its own process so it does not share our GIL);
(b) the same pipeline reading the same shards from a local folder;
(c) a naive loader that GETs one object per image from the same endpoint (one PNG per object);
(d) PNG decode alone from bytes already in memory: the ceiling for (a) and (b).
Everything on our side runs in one process and one thread (loader_workers=0, torch threads 1), so
the numbers are per core. Goals: (a) >= 0.9 x (b); (a) >= 10 x (c); (b) within 2x of (d).

Suite `foreign` (shards as webdataset's ShardWriter writes them: JPEGs around 256 px, mixed
non-square sizes, labels in .json, captions in .txt; `ganpipe data index`ed; to 64x64):
(a) our loader from the S3 endpoint; (b) our loader from local files; (c) the loader people write
by hand: wds.WebDataset(...).decode("pil") plus a torchvision-style Resize(64) + CenterCrop(64)
(Pillow bilinear, as torchvision does on PIL images) over the same local files; and, decode alone
from memory, our decoder with Pillow's JPEG draft mode (d1) and without it (d2).
Goals: (a) >= 0.9 x (b); (b) >= 2 x (c).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.config import DataSpec  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.data.reader import decode, iter_shard  # noqa: E402
from pipeline.data.stream import make_batches  # noqa: E402
from bench.tables import print_tables  # noqa: E402

RESOLUTION = 32


def digits_npz(path: str, count: int) -> None:
    """>= 20k distinct 32x32 digits: the 1,797 bundled ones, upscaled, each copy shifted by a
    random -2..2 px so no two samples are byte-identical PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    grey = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(g).resize((RESOLUTION, RESOLUTION), Image.BICUBIC)) for g in grey])
    rng = np.random.default_rng(0)
    idx = np.arange(count) % len(big)
    shifts = rng.integers(-2, 3, size=(count, 2))
    images = np.stack([np.roll(big[i], tuple(s), axis=(0, 1)) for i, s in zip(idx, shifts)])
    np.savez(path, images=np.repeat(images[..., None], 3, axis=3), labels=load_digits().target[idx])


def start_endpoint() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


def rate(samples: int, seconds: float) -> float:
    return samples / seconds


def bench_pipeline(root: str, endpoint: str | None, batch: int) -> float:
    spec = DataSpec(root=root, endpoint_url=endpoint, resolution=RESOLUTION, sampling="epoch", shuffle_buffer=1000)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=batch, seed=0)
    start = time.perf_counter()
    n = 0
    for images, _ in stream:
        n += images.shape[0]
        if stream.state()["epoch"] == 1:
            break
    return rate(n, time.perf_counter() - start)


def bench_naive(client, bucket: str, keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        decode({"png": data, "__key__": key, "__url__": key}, RESOLUTION)
    return rate(len(keys), time.perf_counter() - start)


def bench_decode(raws: list[dict]) -> float:
    start = time.perf_counter()
    for raw in raws:
        decode(raw, RESOLUTION)
    return rate(len(raws), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=["packed", "foreign", "all"], default="all")
    parser.add_argument("--foreign-samples", type=int, default=4000, help="JPEGs in the foreign suite")
    parser.add_argument("--samples", type=int, default=12 * 1797)
    parser.add_argument("--naive", type=int, default=2000, help="objects for the one-GET-per-image loader")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if args.suite in ("packed", "all"):
        bench_packed(args)
    if args.suite in ("foreign", "all"):
        from bench.data_foreign import bench_foreign

        bench_foreign(args, start_endpoint)


def bench_packed(args) -> None:
    import boto3

    from pipeline.data import s3
    from pipeline.data.manifest import MANIFEST_NAME
    from pipeline.data.pack import pack

    proc, endpoint = start_endpoint()
    try:
        work = tempfile.mkdtemp(prefix="ganpipe-bench-")
        npz, local = os.path.join(work, "digits32.npz"), os.path.join(work, "shards")
        digits_npz(npz, args.samples)
        pack(npz, local, shard_size=args.shard_size, resolution=RESOLUTION, progress=False)
        manifest, _ = load_manifest(local)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bench")
        # The very same shard files go to S3, so (a) and (b) read identical bytes.
        for entry in manifest["shards"]:
            s3.upload_if_changed(os.path.join(local, entry["name"]), f"s3://bench/digits/{entry['name']}", entry["sha256"], endpoint_url=endpoint)
        with open(os.path.join(local, MANIFEST_NAME), "rb") as f:
            s3.put_bytes(f"s3://bench/digits/{MANIFEST_NAME}", f.read(), endpoint_url=endpoint)

        raws = [raw for e in manifest["shards"] for raw in iter_shard(os.path.join(local, e["name"]))]
        naive_keys = [f"naive/{r['__key__']}.png" for r in raws[: args.naive]]
        for key, raw in zip(naive_keys, raws):
            client.put_object(Bucket="bench", Key=key, Body=raw["png"])

        bench_pipeline(local, None, args.batch)  # warm-up: imports, page cache
        # Interleaved rounds, best of each: on a shared machine a neighbour's burst then slows one
        # round of every loader rather than all rounds of one loader.
        loaders = {
            "(a) pipeline from S3 endpoint": lambda: bench_pipeline("s3://bench/digits", endpoint, args.batch),
            "(b) pipeline from local folder": lambda: bench_pipeline(local, None, args.batch),
            "(c) naive: one GET per image": lambda: bench_naive(client, "bench", naive_keys),
            "(d) decode alone from memory": lambda: bench_decode(raws),
        }
        rounds = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, run in loaders.items():
                rounds[name].append(run())
        results = {name: max(values) for name, values in rounds.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    a, b, c, d = results.values()
    size = sum(e["bytes"] for e in manifest["shards"]) / 2**20
    print(f"\n{manifest['num_samples']:,} samples, {len(manifest['shards'])} shards, {size:.1f} MiB, "
          f"{RESOLUTION}x{RESOLUTION} PNG; batch {args.batch}; one core, loader_workers=0; best of {args.rounds} rounds\n")
    print_tables(results, [
        ("(a) >= 0.9 x (b)", a / b, a / b >= 0.9),
        ("(a) >= 10 x (c)", a / c, a / c >= 10),
        ("(d) / (b) <= 2", d / b, d / b <= 2),
    ])


if __name__ == "__main__":
    main()
