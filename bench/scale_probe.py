"""One measurement of bench/scale.py, in a process of its own so that its peak RSS is its own.

    python bench/scale_probe.py WHAT ROOT COUNT [extra]   ->   one JSON line on stdout

Every probe reports wall and CPU seconds of the measured call alone (imports and the S3 client's
first connection are done before the clock starts), the RSS before it and the process's peak RSS
(VmHWM: the high-water mark of the whole process, imports included). The endpoint comes from
AWS_ENDPOINT_URL_S3, as for any ganpipe command.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.data import s3  # noqa: E402
from pipeline.data.config import DataSpec  # noqa: E402
from pipeline.data.manifest import check_shards, load_manifest  # noqa: E402
from pipeline.data.stream import make_batches  # noqa: E402

SIDE = 8


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def rss_mb() -> float:
    return status_mb("VmRSS")


def peak_mb() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and execve, so a probe
    # started by a bigger parent would report the parent's peak. VmHWM belongs to this image only.
    return status_mb("VmHWM")


def spec(root: str, **kw) -> DataSpec:
    return DataSpec(root=root, resolution=SIDE, **kw)


def probe_index(root: str, count: int) -> dict:
    """`ganpipe data index` over the first COUNT shards (a brace pattern) into its own prefix."""
    from pipeline.data.index import index

    bucket = root.split("/")[2]
    pattern = f"{root}/shard-{{000000..{count - 1:06d}}}.tar"
    report = index(pattern, out=f"s3://{bucket}/index-{count}", parallel=8)  # the CLI's default --parallel
    return {"samples": report.manifest["num_samples"]}


def probe_listing(root: str, count: int) -> dict:
    """The first thing `data index` does with a brace pattern: each named shard's size and version
    (shard_listing.list_shards), the part of index that does not read the shards."""
    from pipeline.data.shard_listing import list_shards

    listing = list_shards(f"{root}/shard-{{000000..{count - 1:06d}}}.tar")
    return {"shards": len(listing.shards)}


def probe_verify(root: str, count: int) -> dict:
    """`ganpipe data verify` of a COUNT-shard manifest (every sample decoded, every sha256)."""
    from pipeline.data.verify import verify

    report = verify(root)
    if not report.ok:
        raise SystemExit(f"verify found problems: {report.problems[:3]}")
    return {"samples": report.samples}


def probe_driver(root: str, count: int) -> dict:
    """What `ganpipe train` does with the data before Ray starts (train/launch.py: train, step 2):
    check_shards (manifest, every shard's existence and size), then the manifest and its sha256."""
    manifest = check_shards(spec(root))
    _, snapshot = load_manifest(root)
    return {"shards": len(manifest["shards"]), "manifest_bytes": len(json.dumps(manifest))}


def probe_worker(root: str, count: int) -> dict:
    """What each rank does before its first step (train/worker.py): make_batches (manifest, epoch
    layout), then the first batch (epoch plan, first shard opened and read up to the batch)."""
    stream = make_batches(spec(root, sampling="epoch", shuffle_buffer=1000), rank=0, world_size=2, batch_size=32, seed=0)
    first = time.perf_counter()
    next(iter(stream))
    return {"first_batch_s": time.perf_counter() - first}


def probe_plan(root: str, count: int) -> dict:
    """The epoch plan of 2 ranks (what each keeps to know its samples: shard URLs and counts, the
    layout, its segments of the epoch) and the size of one rank's checkpointed data position."""
    from pipeline.data import epoch_plan as plan

    make_batches(spec(root, sampling="epoch"), rank=0, world_size=2, batch_size=32, seed=0)  # lazy imports, caches
    tracemalloc.start()
    kept = []
    for rank in range(2):
        stream = make_batches(spec(root, sampling="epoch"), rank=rank, world_size=2, batch_size=32, seed=0)
        c = stream.config
        begin, end = plan.worker_range(sum(c.counts), stream.layout, rank, 0)
        kept.append((stream, plan.segments(c.counts, c.seed, 0, begin, end)))
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    position = json.dumps(kept[0][0].state())
    return {"plan_kib": retained / 1024, "plan_peak_kib": peak / 1024, "position_bytes": len(position.encode())}


def probe_loader(root: str, count: int, rank: int = 0, world: int = 1, samples: int = 100_000) -> dict:
    """The loader alone (no model): rank RANK of WORLD reading SAMPLES samples from S3, in-process
    (loader_workers=0), as bench/data.py measures it."""
    import torch

    torch.set_num_threads(1)
    stream = make_batches(spec(root, sampling="epoch", shuffle_buffer=1000), rank=rank, world_size=world, batch_size=256, seed=0)
    n = 0
    start = time.perf_counter()
    for images, _ in stream:
        n += images.shape[0]
        if n >= samples:
            break
    return {"samples": n, "loop_s": time.perf_counter() - start}


PROBES = {"index": probe_index, "listing": probe_listing, "verify": probe_verify, "driver": probe_driver, "worker": probe_worker,
          "plan": probe_plan, "loader": probe_loader}


def main() -> None:
    what, root, count, *extra = sys.argv[1:]
    s3.client(None).list_buckets()  # the client's first connection is not what we measure
    before = rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    found = PROBES[what](root, int(count), *map(int, extra))
    found.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, rss_before_mb=before, peak_mb=peak_mb())
    print(json.dumps(found))


if __name__ == "__main__":
    main()
