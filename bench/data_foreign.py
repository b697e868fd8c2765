"""bench/data.py's `foreign` suite: shards we did not write (JPEG around 256 px, any aspect), to 64 px.

Run through bench/data.py (`--suite foreign`); see its docstring for the loaders and the goals.
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import torch

from pipeline.data.config import DataSpec
from pipeline.data.decode import DecodeConfig, SampleDecoder
from pipeline.data.reader import iter_shard
from pipeline.data.stream import make_batches
from bench.tables import print_tables

RESOLUTION = 64


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Photo-like content: smooth shapes plus fine texture, so the JPEG carries a realistic amount
    of entropy-coded detail (~10-20 KB at 256 px, quality 90), unlike a flat synthetic picture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 17.0 + y / 23.0)], axis=2) * 150 + 40
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 60)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def write_shards(folder: str, count: int, per_shard: int) -> None:
    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    with wds.ShardWriter(os.path.join(folder, "%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(count):
            w, h = (int(v) for v in rng.integers(224, 320, size=2))
            buf = io.BytesIO()
            Image.fromarray(photo(rng, w, h)).save(buf, format="JPEG", quality=90)
            sink.write({"__key__": f"{i:08d}", "jpg": buf.getvalue(), "json": {"label": i % 10}, "txt": "a photo"})


def ours(root: str, endpoint: str | None, batch: int) -> float:
    spec = DataSpec(root=root, endpoint_url=endpoint, resolution=RESOLUTION, sampling="epoch", shuffle_buffer=1000)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=batch, seed=0)
    start, n = time.perf_counter(), 0
    for images, _ in stream:
        n += images.shape[0]
        if stream.state()["epoch"] == 1:
            break
    return n / (time.perf_counter() - start)


def by_hand(urls: list[str], batch: int) -> float:
    """What a user writes without us: webdataset's PIL decoder, then Resize(64) + CenterCrop(64)
    as torchvision does them on a PIL image (bilinear with antialias), to a float tensor."""
    import webdataset as wds
    from PIL import Image

    def transform(img):
        w, h = img.size
        scale = RESOLUTION / min(w, h)
        img = img.resize((max(RESOLUTION, round(w * scale)), max(RESOLUTION, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = int(round((w - RESOLUTION) / 2.0)), int(round((h - RESOLUTION) / 2.0))
        img = img.crop((left, top, left + RESOLUTION, top + RESOLUTION))
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)

    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .shuffle(1000)
        .decode("pil")
        .to_tuple("jpg", "json")
        .map_tuple(transform, lambda j: j["label"])
        .batched(batch)
    )
    start, n = time.perf_counter(), 0
    for images, _ in pipeline:
        n += images.shape[0]
    return n / (time.perf_counter() - start)


def decode_only(raws: list[dict], draft: bool) -> float:
    decoder = SampleDecoder(DecodeConfig(kind="indexed", resolution=RESOLUTION, label_key="json.label", draft=draft))
    start = time.perf_counter()
    for raw in raws:
        decoder(raw)
    return len(raws) / (time.perf_counter() - start)


def bench_foreign(args, start_endpoint) -> None:
    import boto3

    from pipeline.data.index import index

    proc, endpoint = start_endpoint()
    try:
        work = tempfile.mkdtemp(prefix="ganpipe-bench-foreign-")
        local = os.path.join(work, "shards")
        write_shards(local, args.foreign_samples, per_shard=500)
        names = sorted(n for n in os.listdir(local) if n.endswith(".tar"))
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bench")
        for name in names:  # plain boto3, as the files would have arrived from another tool
            client.upload_file(os.path.join(local, name), "bench", f"foreign/{name}")
        index(local, label_key="json.label", cache_dir=os.path.join(work, "cache"))
        index("s3://bench/foreign", label_key="json.label", endpoint_url=endpoint, cache_dir=os.path.join(work, "cache"))
        urls = [os.path.join(local, n) for n in names]
        raws = [raw for u in urls[:2] for raw in iter_shard(u)]
        size = sum(os.path.getsize(u) for u in urls) / 2**20

        ours(local, None, args.batch)  # warm-up: imports, page cache
        loaders = {
            "(a) ours from S3 endpoint": lambda: ours("s3://bench/foreign", endpoint, args.batch),
            "(b) ours from local files": lambda: ours(local, None, args.batch),
            "(c) by hand: wds .decode('pil') + resize/crop": lambda: by_hand(urls, args.batch),
            "(d1) our decode alone, draft mode": lambda: decode_only(raws, True),
            "(d2) our decode alone, full decode": lambda: decode_only(raws, False),
        }
        rounds = {name: [] for name in loaders}
        for _ in range(args.rounds):  # interleaved, best of each (see bench/README.md)
            for name, run in loaders.items():
                rounds[name].append(run())
        results = {name: max(values) for name, values in rounds.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    a, b, c, d1, d2 = results.values()
    print(f"\nforeign shards: {args.foreign_samples:,} JPEGs of 224-319 px (any aspect), {len(names)} shards, {size:.1f} MiB, "
          f"to {RESOLUTION}x{RESOLUTION}; batch {args.batch}; one core, loader_workers=0; best of {args.rounds} rounds\n")
    print_tables(results, [
        ("(a) >= 0.9 x (b)", a / b, a / b >= 0.9),
        ("(b) >= 2 x (c)", b / c, b / c >= 2),
        ("draft mode: (d1) / (d2)", d1 / d2, None),
    ])
