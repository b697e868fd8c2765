"""The driver's overlap alone (bench/README.md, "Start-up"): open an MLflow run and import the trainer
(torch, Ray Train), and start a local Ray, one after the other ("serial", the order before) or with
the run and imports in a second thread as train/launch.py does ("overlap"). Each try is a fresh
interpreter; the two alternate, so a neighbour's load falls on both alike.

    .venv/bin/python bench/startup_overlap.py [pairs]      # default 4 pairs, ~3 min on a loaded VM
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r'''
import sys, time, uuid
t0 = time.time()
mode, db = sys.argv[1], sys.argv[2]
from pipeline.train.background import Background
from pipeline.train.launch import init_ray

def open_and_import():
    from pipeline.tracking.run import open_run
    open_run(tracking_uri=f"sqlite:///{db}", experiment="overlap", run_name=uuid.uuid4().hex, tags={}, resolved_spec={"a": 1})
    import ray.train.torch  # noqa: F401

if mode == "serial":
    open_and_import()
    init_ray(60)
else:
    opening = Background(open_and_import)
    init_ray(60)
    opening.result()
print(f"{time.time() - t0:.2f}")
import ray
ray.shutdown()
'''


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    db = Path(tempfile.mkdtemp(prefix="ganpipe-overlap-")) / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    res: dict[str, list[float]] = {"serial": [], "overlap": []}
    for _ in range(pairs):
        for mode in res:
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(db)], cwd=REPO, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{mode}: failed\n{out.stderr[-2000:]}", flush=True)
                continue
            res[mode].append(float(out.stdout.split()[0]))
            print(f"{mode} {res[mode][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    for mode, secs in res.items():
        print(f"{mode}: median {statistics.median(secs):.1f} s of {', '.join(f'{s:.1f}' for s in secs)}")


if __name__ == "__main__":
    main()
