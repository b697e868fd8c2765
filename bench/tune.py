"""Search benchmark: does a search find better regularization strengths than the quickstart's, and
how much does early stopping save?

1. The search (jobs/searches/quickstart-r1.yaml: R1 gamma × EMA beta, 8 trials, ASHA over FD evals)
   runs as `ganpipe tune` runs it; its wall time and trial-steps (steps the trials actually trained)
   are measured.
2. The same trials (same seed, so the same draws) run one after another with no early stopping:
   the baseline for wall time and trial-steps, and the full-run FD of every trial (where ASHA's pick
   ranks among them).
3. The winner's job and the quickstart's own strengths are retrained from scratch over `--seeds`
   seeds each (ordinary `ganpipe train` runs); their final FD, mean ± standard deviation, side by side.

Goals (issue 10): tuned mean FD <= 0.8 × the quickstart's; early stopping saves >= 40 % of trial-steps.
Everything lands in a work folder (its own MLflow SQLite store, checkpoints, best job files); nothing
touches ./mlflow.db. `--quick` shrinks it to a smoke check (minutes, figures meaningless).

    .venv/bin/python bench/tune.py --data data/digits                 # hours on 2 cores
    .venv/bin/python bench/tune.py --data data/digits --quick         # a few minutes
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICK = {
    "set": ["train.steps=40", "train.eval_every=10", "train.global_batch=16", "train.log_every=10", "scaling.num_workers=1",
            "eval.num_samples=64", "eval.classifier_steps=30"],
    "trials": 4,
    "max_concurrent": 2,
}


def write_search(src: Path, out: Path, *, work: Path, data: str, scheduler: dict | None, quick: bool,
                 max_concurrent: int | None = None) -> Path:
    """The search file with the bench's data, stores and budget; `scheduler` replaces the file's."""
    raw = yaml.safe_load(src.read_text())
    raw["job"] = str((src.parent / raw["job"]).resolve())
    raw["set"] = [*raw.get("set", []), f"data.root={Path(data).resolve()}", f"checkpoint.storage_path={work / 'ray_results'}",
                  f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", f"eval.cache_dir={work / 'cache'}",
                  "tracking.registered_model=bench-tune", "train.sample_every=100000"]
    raw["winner"] = "none"  # the bench retrains the winner itself
    if quick:
        raw["set"] += QUICK["set"]
        raw.update({k: v for k, v in QUICK.items() if k != "set"})
    if scheduler is not None:
        raw["scheduler"] = scheduler
    if max_concurrent is not None:
        raw["max_concurrent"] = max_concurrent
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def final_fd(tracking_uri: str, run_id: str) -> float:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, "eval/fd")
    return max(history, key=lambda m: m.step).value


def retrain(job, seeds: list[int], label: str, tracking_uri: str) -> list[float]:
    """`ganpipe train` on `job` once per seed; the final FD of each run."""
    from pipeline.train.launch import train

    out = []
    for seed in seeds:
        spec = job.model_copy(update={"train": job.train.model_copy(update={"seed": seed})})
        t0 = time.monotonic()
        result = train(spec, run_name=f"bench-{label}-seed{seed}-{int(time.time())}", tracking_uri=tracking_uri, show_progress=False)
        out.append(final_fd(tracking_uri, result.run_id))
        print(f"  {label} seed {seed}: FD {out[-1]:.3f} ({time.monotonic() - t0:.0f} s)", flush=True)
    return out


def trial_steps(outcome) -> int:
    return sum(r.step or 0 for r in outcome.rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", type=Path, default=REPO / "jobs/searches/quickstart-r1.yaml")
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--seeds", type=int, default=3, help="retraining seeds per arm")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--quick", action="store_true", help="tiny budget: a smoke check, not a measurement")
    args = ap.parse_args()

    from pipeline.tune.driver import run_search
    from pipeline.tune.spec import load_search

    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-tune-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    print(f"work folder {work}", flush=True)
    asha = load_search(write_search(args.search, work / "search-asha.yaml", work=work, data=args.data, scheduler=None, quick=args.quick))
    fifo = load_search(write_search(args.search, work / "search-fifo.yaml", work=work, data=args.data, quick=args.quick,
                                    scheduler={"kind": "none"}, max_concurrent=1))
    assert asha.trials == fifo.trials, "the baseline must run the same trials"
    s, base = asha.spec, asha.base_job()

    print(f"1/3 search with {s.scheduler.kind}: {len(asha.trials)} trials × {base.train.steps} steps", flush=True)
    searched = run_search(asha, best_spec=work / "best-asha.yaml", show_progress=False)
    print(f"  {searched.wall_s:.0f} s, {trial_steps(searched)} trial-steps, best {searched.best.params}", flush=True)
    print("2/3 the same trials one after another, no early stopping", flush=True)
    full = run_search(fifo, best_spec=work / "best-fifo.yaml", show_progress=False)
    print(f"  {full.wall_s:.0f} s, {trial_steps(full)} trial-steps, best {full.best.params}", flush=True)

    seeds = list(range(args.seeds))
    print(f"3/3 retraining over seeds {seeds}", flush=True)
    quick_fd = retrain(base, seeds, "quickstart", uri)
    tuned_fd = retrain(asha.job_for(searched.best.params), seeds, "tuned", uri)

    # Where ASHA's pick ranks among all trials run to the end (1 = it found the best one).
    by_params = {tuple(sorted(r.params.items())): r.metric for r in full.rows}
    ranked = sorted(by_params.values())
    pick = by_params[tuple(sorted(searched.best.params.items()))]
    report(s, base, searched, full, quick_fd, tuned_fd, rank=ranked.index(pick) + 1, seeds=seeds)


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def report(s, base, searched, full, quick_fd, tuned_fd, *, rank: int, seeds: list[int]) -> None:
    params = list(s.space)
    quick_values = {p: _value(base, p) for p in params}
    print(f"\n| strengths | {' | '.join(params)} | " + " | ".join(f"FD seed {i}" for i in seeds) + " | FD mean ± sd |")
    print("|---|" + "---:|" * (len(params) + len(seeds) + 1))
    for label, values, fds in (("quickstart", quick_values, quick_fd), ("tuned", searched.best.params, tuned_fd)):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (values[p] for p in params)]
        print(f"| {label} | {' | '.join(cells)} | " + " | ".join(f"{x:.3f}" for x in fds) + f" | {_mean_sd(fds)} |")
    ratio = statistics.mean(tuned_fd) / statistics.mean(quick_fd)
    saved = 1 - trial_steps(searched) / trial_steps(full)
    print(f"\n| search ({len(searched.rows)} trials × {base.train.steps} steps) | wall s | trial-steps |")
    print("|---|---:|---:|")
    print(f"| {s.scheduler.kind}, {s.max_concurrent} at once | {searched.wall_s:.0f} | {trial_steps(searched)} |")
    print(f"| no early stopping, one after another | {full.wall_s:.0f} | {trial_steps(full)} |")
    stopped = sum(r.state == "stopped early" for r in searched.rows)
    print(f"\n{stopped} of {len(searched.rows)} trials stopped early; ASHA's pick ranks {rank} of {len(full.rows)} by full-run FD")
    print("\n| goal | measured | met |\n|---|---:|:---:|")
    print(f"| tuned mean FD <= 0.8 × quickstart's | {ratio:.2f} | {'yes' if ratio <= 0.8 else 'no'} |")
    print(f"| early stopping saves >= 40 % of trial-steps | {saved:.0%} | {'yes' if saved >= 0.4 else 'no'} |")
    print(f"| search wall time / one-after-another wall time | {searched.wall_s / full.wall_s:.2f} | |")


def _value(job, path: str):
    """A spec field by its search path (regularizers by kind), for the quickstart's row."""
    node = job.model_dump(mode="json")
    parts = path.split(".")
    if parts[0] == "regularization":
        entry = next(e for e in node["regularization"] if e["kind"] == parts[1].split(":")[0])
        key = parts[2]
        return entry.get(key, entry.get("weight") if key == "gamma" else None)
    for part in parts:
        node = node[part]
    return node


if __name__ == "__main__":
    main()
