"""Start-up: seconds from `ganpipe train` starting to its first progress line, split into its parts.

    .venv/bin/python bench/startup.py                      # 3 runs, median of each part (~3 min quiet)
    .venv/bin/python bench/startup.py --before DIR         # also DIR's code (a checkout), runs interleaved

Each run is the quickstart as a new user types it (`ganpipe train jobs/quickstart.yaml`, 2 workers,
1 torch thread each, local Ray), shortened to 20 steps and without the final evaluation, on the
digits packed into local shards. The first progress line (`step 10/20 ...`) is timed from outside,
from the command's start. The parts come from the run itself: the driver and rank 0 mark wall-clock
times (pipeline/train/startup.py) and rank 0 logs them as `startup/*` MLflow metrics, seconds since
the driver's process started. With --before, runs of the two codes alternate (A B A B ...), so a
neighbour's load on a shared machine falls on both alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_S = 12.0
# (label, from mark, to mark): durations between the timeline's marks. Parts marked (bg) run in the
# driver's second thread while Ray starts in the first, so the driver's rows overlap.
PARTS = (
    ("driver: interpreter, CLI, spec, shard checks", "driver_process", "data_checked"),
    ("driver (bg): open the MLflow run", "data_checked", "run_open"),
    ("driver (bg): import torch + Ray Train", "run_open", "trainer_imported"),
    ("driver: ray.init (local Ray up)", "data_checked", "ray_ready"),
    ("driver: checks done → Ray Train starts", "data_checked", "fit"),
    ("Ray Train: controller, helpers, placement → worker process", "fit", "worker_process"),
    ("worker: ray, Ray Train, torch, process group", "worker_process", "worker_import"),
    ("worker: import pipeline.train.worker", "worker_import", "worker_imported"),
    ("worker: build G, D, optimizers, DDP", "loop", "built"),
    ("rank 0: MLflow logger, scorer", "built", "rank0_ready"),
    ("first batch (shard stream)", "rank0_ready", "first_batch"),
    ("first step", "first_batch", "first_step"),
    ("steps 2-10 and the log step", "first_step", "first_log"),
)


def one_run(workdir: Path, data: Path, *, code: Path, index: int) -> dict[str, float]:
    """One `ganpipe train` of `code` (a checkout); its timeline in seconds, plus the first line's time."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    name = f"startup-{index}"
    sets = [f"data.root={data}", "train.steps=20", "eval=null", f"checkpoint.storage_path={workdir / 'ray_results'}",
            "tracking.experiment=bench-startup", "tracking.registered_model=bench-startup"]
    cmd = [sys.executable, "-m", "pipeline", "train", str(code / "jobs/quickstart.yaml"), "--name", name,
           "--tracking-uri", uri, *[a for s in sets for a in ("--set", s)]]
    # PYTHONPATH: the driver and Ray's workers (which inherit the driver's environment) import `code`'s package.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": str(code)}
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, lines = None, []
    for line in proc.stdout:  # not a terminal: one plain line per log step (train/progress.py)
        lines.append(line)
        if first is None and line.startswith("step 10/"):
            first = time.time() - started
    if proc.wait() != 0 or first is None:
        raise SystemExit(f"ganpipe train failed (exit {proc.returncode}):\n{''.join(lines[-40:])}")
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("bench-startup").experiment_id],
                             filter_string=f"attributes.run_name = '{name}'")[0]
    marks = {k.removeprefix("startup/").removesuffix("_s"): v for k, v in run.data.metrics.items() if k.startswith("startup/")}
    # The command started a few ms before the driver's process; the line is timed from the command.
    return {**marks, "driver_process": 0.0, "first_line": first}


def part(marks: dict[str, float], a: str, b: str) -> float | None:
    return marks[b] - marks[a] if a in marks and b in marks else None


def print_table(results: dict[str, list[dict[str, float]]], load: str) -> None:
    labels = list(results)
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"\n{load}\n")
    print("| part, s (median of runs) | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for label, a, b in PARTS:
        cells = [med([p for m in results[k] if (p := part(m, a, b)) is not None]) for k in labels]
        print(f"| {label} | " + " | ".join(fmt(c) for c in cells) + " |")
    for label, key in (("**first progress line (step 10), from the command's start**", "first_line"),):
        print(f"| {label} | " + " | ".join(f"**{med([m[key] for m in results[k]]):.1f}**" for k in labels) + " |")
    print("| each run's first line, s | " + " | ".join(", ".join(f"{m['first_line']:.1f}" for m in results[k]) for k in labels) + " |")
    for k in labels:
        print(f"\n{k}: goal first line <= {GOAL_S:.0f} s: {'met' if med([m['first_line'] for m in results[k]]) <= GOAL_S else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare with (e.g. git archive of a commit)")
    args = ap.parse_args()
    codes = {"after (this checkout)": REPO}
    if args.before:
        codes = {f"before ({args.before})": args.before.resolve(), **codes}
    workdir = Path(tempfile.mkdtemp(prefix="ganpipe-bench-startup-"))
    from pipeline.data.pack import pack

    data = workdir / "digits"
    pack("digits", str(data), shard_size=1000, resolution=32, progress=False)
    results: dict[str, list[dict]] = {k: [] for k in codes}
    loads = []
    for i in range(args.runs):
        for label, code in codes.items():  # interleaved: A B A B ...
            loads.append(os.getloadavg()[0])
            results[label].append(one_run(workdir, data, code=code, index=len(loads)))
            print(f"{label} run {i + 1}: first line {results[label][-1]['first_line']:.1f} s", flush=True)
    load = f"1-min load average before each run: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores"
    print_table(results, load)


if __name__ == "__main__":
    main()
