"""How the data plane's costs grow with the data: a million samples in 1,000 shards on S3.

    .venv/bin/python bench/scale.py [--shards 1000] [--loader-samples 100000]

Builds (once, cached under ~/.cache/ganpipe-bench/scale) N x 1,000 generated 8x8 images packed by
our own `pack`, copies them into a fresh moto S3 server on 127.0.0.1 (its own process), and
measures at N/10, 3N/10 and N shards, each probe in a process of its own (bench/scale_probe.py):
  - `data index` (a brace pattern over the first n shards), its listing step alone, and
    `data verify`: time, peak RSS;
  - the driver's data checks before Ray starts (check_shards + manifest) and one rank's start
    (make_batches, then its first batch): time and peak RSS;
  - the epoch plan of 2 ranks and one checkpointed data position (bytes);
  - samples/s of the loader alone from S3, 1 process (world 1) and 2 processes (2 ranks).
Each probe reports wall and CPU seconds, moto's CPU seconds over the same call (from /proc) and
its peak RSS. It prints each figure beside its growth ratio and the ratio that linear growth (time) or no growth
(memory) would give, so superlinear growth shows at a glance.

How long: the first run packs the shards (3.7 CPU-minutes for 1,000 shards; 13 minutes of wall on
2 busy cores). After that a full run took 13 minutes on 2 cores shared with other work (upload
35 s; index and verify of 100 + 300 + 1,000 shards most of the rest). --shards 100 measures
10/30/100 shards in a few minutes (plus its own one-time pack), mostly the probes' imports;
--only picks measures (--only listing,driver,worker: about 3 minutes with the upload).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.data import start_endpoint  # noqa: E402
from bench.scale_data import build, subset_root, upload  # noqa: E402

BUCKET = "scale"
MEASURES = ("index", "listing", "verify", "driver", "worker", "plan", "loader")
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale_probe.py")


SERVER = {"pid": 0}  # moto's process: its CPU time is the store's share of a probe's cost


def probe(env: dict, what: str, root: str, count: int, *extra: int, code: str = PROBE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, code, what, root, str(count), *map(str, extra)], env=env,
                            stdout=subprocess.PIPE, text=True)


def server_cpu() -> float:
    """CPU seconds moto has used so far (utime + stime from /proc): on a shared machine the server's
    wall time is mostly waiting for a core, its CPU time is the work we asked of it."""
    with open(f"/proc/{SERVER['pid']}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"probe {proc.args[2:]} failed with exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def run(env: dict, what: str, root: str, count: int, *extra: int, code: str = PROBE) -> dict:
    before = server_cpu()
    found = result(probe(env, what, root, count, *extra, code=code))
    found["server_cpu"] = server_cpu() - before
    return found


def growth_table(counts: list[int], rows: list[tuple[str, list[float], str]]) -> None:
    """rows: (measure, value per count, 'linear' or 'flat': the growth expected). Ratios against the smallest count."""
    lo = counts[0]
    ratios = [c / lo for c in counts[1:]]
    head = " | ".join(f"{c:,} shards" for c in counts)
    rhead = " | ".join(f"x{c:,}/{lo:,}" for c in counts[1:])
    print(f"| measure | {head} | {rhead} | linear / flat would be |")
    print("|---|" + "---:|" * len(counts) + "---:|" * len(ratios) + "---|")
    for name, values, kind in rows:
        cells = " | ".join(f"{v:,.2f}" for v in values)
        grown = " | ".join(f"{v / values[0]:.2f}" if values[0] else "-" for v in values[1:])
        expect = " / ".join(f"{r:.1f}" for r in ratios) if kind == "linear" else " / ".join("1.0" for _ in ratios)
        print(f"| {name} | {cells} | {grown} | {expect} ({kind}) |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1000, help="shards of 1,000 samples (default 1000: a million samples)")
    parser.add_argument("--loader-samples", type=int, default=100_000, help="samples each loader process reads")
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated subset of {','.join(MEASURES)}")
    parser.add_argument("--before", metavar="DIR", help="a checkout of older code (e.g. git archive of a commit, with "
                        "these bench files copied in): run --only's growth probes from both, interleaved, as before/after")
    args = parser.parse_args()
    only = [m for m in MEASURES if m in args.only.split(",")]
    counts = sorted({max(1, args.shards // 10), max(1, args.shards * 3 // 10), args.shards})

    folder = build(args.shards)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    # Objects over 1 MiB go to moto's temporary files instead of its heap: 2 GB of shards would
    # otherwise sit in the server's RSS on a machine we share.
    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(1 << 20)
    proc, endpoint = start_endpoint()
    SERVER["pid"] = proc.pid
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        t = time.perf_counter()
        manifest = upload(folder, client, BUCKET)
        roots = {c: subset_root(client, BUCKET, manifest, c) for c in counts}
        print(f"{manifest['num_samples']:,} samples in {len(manifest['shards'])} shards "
              f"({manifest['total_bytes'] / 1e9:.2f} GB) copied to moto in {time.perf_counter() - t:.0f} s (not measured)\n")
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": endpoint}
        if args.before:
            compare(env, counts, roots, only, os.path.join(os.path.abspath(args.before), "bench", "scale_probe.py"))
        else:
            measure(env, counts, roots, args.loader_samples, only)
    finally:
        proc.terminate()
        proc.wait()


LABELS = {"index": "data index", "listing": "index: listing the pattern", "verify": "data verify",
          "driver": "driver data checks", "worker": "rank start + first batch"}


def where(what: str, count: int, roots: dict[int, str]) -> str:
    return f"s3://{BUCKET}/shards" if what in ("index", "listing") else roots[count]


def measure(env: dict, counts: list[int], roots: dict[int, str], loader_samples: int, only: list[str]) -> None:
    found = {what: {c: run(env, what, where(what, c, roots), c) for c in counts} for what in LABELS if what in only}
    rows = []
    for what, by in found.items():
        label = LABELS[what]
        rows += [(f"{label}: wall s", [by[c]["wall"] for c in counts], "linear"),
                 (f"{label}: CPU s", [by[c]["cpu"] for c in counts], "linear"),
                 (f"{label}: server CPU s", [by[c]["server_cpu"] for c in counts], "linear"),
                 (f"{label}: peak RSS MB", [by[c]["peak_mb"] for c in counts], "flat")]
    if rows:
        print("Time and memory against the shard count (each probe its own process; wall is under whatever load the machine has):\n")
        growth_table(counts, rows)
    lo, hi = counts[0], counts[-1]
    if "plan" in only:
        plan_table(env, roots, lo, hi)
    if "loader" in only:
        loader_table(env, roots, hi, loader_samples)


def compare(env: dict, counts: list[int], roots: dict[int, str], only: list[str], old: str) -> None:
    """Each growth probe from the older checkout, then from this one, at each count, one after the other."""
    print("| measure | shards | wall s before | after | CPU s before | after | server CPU s before | after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for what in (w for w in LABELS if w in only):
        for c in counts:
            a, b = (run(env, what, where(what, c, roots), c, code=code) for code in (old, PROBE))
            print(f"| {LABELS[what]} | {c:,} | {a['wall']:.2f} | {b['wall']:.2f} | {a['cpu']:.2f} | {b['cpu']:.2f} "
                  f"| {a['server_cpu']:.2f} | {b['server_cpu']:.2f} |")


def plan_table(env: dict, roots: dict[int, str], lo: int, hi: int) -> None:
    plans = {c: run(env, "plan", roots[c], c) for c in (lo, hi)}
    print("Epoch plan of 2 ranks (tracemalloc) and one rank's checkpointed data position:\n")
    growth_table([lo, hi], [("plan retained KiB", [plans[c]["plan_kib"] for c in (lo, hi)], "linear"),
                            ("plan peak KiB", [plans[c]["plan_peak_kib"] for c in (lo, hi)], "linear"),
                            ("data position bytes", [plans[c]["position_bytes"] for c in (lo, hi)], "flat")])


def loader_table(env: dict, roots: dict[int, str], hi: int, loader_samples: int) -> None:
    one = run(env, "loader", roots[hi], hi, 0, 1, loader_samples)
    served = server_cpu()
    pair = [result(p) for p in [probe(env, "loader", roots[hi], hi, r, 2, loader_samples) for r in range(2)]]
    served = server_cpu() - served
    rate1 = one["samples"] / one["loop_s"]
    n2 = sum(p["samples"] for p in pair)
    rate2 = n2 / max(p["loop_s"] for p in pair)
    print(f"Loader alone from S3 ({hi:,} shards, loader_workers=0, batch 256; moto serves from a third process):\n")
    print("| loader | samples/s | loader CPU s per 1k samples | server CPU s per 1k samples | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    print(f"| 1 process (1 rank) | {rate1:,.0f} | {1000 * one['cpu'] / one['samples']:.3f} "
          f"| {1000 * one['server_cpu'] / one['samples']:.3f} | {one['peak_mb']:.0f} |")
    cpu2 = sum(p["cpu"] for p in pair) / n2
    print(f"| 2 processes (2 ranks) | {rate2:,.0f} | {1000 * cpu2:.3f} | {1000 * served / n2:.3f} "
          f"| {max(p['peak_mb'] for p in pair):.0f} |")
    print(f"| 2 / 1 | {rate2 / rate1:.2f} | | | |")


if __name__ == "__main__":
    main()
