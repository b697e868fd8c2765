"""Search benchmark: does a search find better regularization strengths than the quickstart's, and
how much does early stopping save?

1. The search (jobs/searches/quickstart-r1.yaml: R1 gamma × EMA beta, 8 trials, ASHA over FD evals)
   runs as `ganpipe tune` runs it; its wall time and trial-steps (steps the trials actually trained)
   are measured.
2. The baseline: the same trials (same seed, so the same draws) one after another with no early
   stopping. `--baseline run` runs it (wall time, trial-steps, and the full-run FD of every trial:
   where ASHA's pick ranks among them); `--baseline estimate` does not: its trial-steps are trials ×
   steps by definition, and its wall time is the search's plus, for every stopped trial, the mean wall
   time of the trials that ran to the end minus its own (labelled as an estimate in the table).
3. The winner's job and the quickstart's own strengths are retrained from scratch over `--seeds`
   seeds each (ordinary `ganpipe train` runs); their final FD, mean ± standard deviation, side by side.

Goals (issue 10): tuned mean FD <= 0.8 × the quickstart's; early stopping saves >= 40 % of trial-steps.
Everything lands in a work folder (its own MLflow SQLite store, checkpoints, best job files); nothing
touches ./mlflow.db. Each finished phase is saved in the work folder (phases.json), so a rerun with
the same --work continues where it stopped. `--quick` shrinks it to a smoke check (minutes, figures
meaningless).

    .venv/bin/python bench/tune.py --data data/digits --work bench-tune                       # ~3 h on 2 cores
    .venv/bin/python bench/tune.py --data data/digits --work bench-tune --baseline estimate   # ~1 h
    .venv/bin/python bench/tune.py --data data/digits --quick                                 # a few minutes
"""
from __future__ import annotations

import argparse
import json
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


def retrain(job, seed: int, label: str, tracking_uri: str) -> float:
    """`ganpipe train` on `job` with `seed`; the run's final FD."""
    from pipeline.train.launch import train

    spec = job.model_copy(update={"train": job.train.model_copy(update={"seed": seed})})
    t0 = time.monotonic()
    result = train(spec, run_name=f"bench-{label}-seed{seed}-{int(time.time())}", tracking_uri=tracking_uri, show_progress=False)
    fd = final_fd(tracking_uri, result.run_id)
    print(f"  {label} seed {seed}: FD {fd:.3f} ({time.monotonic() - t0:.0f} s)", flush=True)
    return fd


class Phases:
    """Finished phases' results in <work>/phases.json: a rerun skips them."""

    def __init__(self, work: Path):
        self.path = work / "phases.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, fn):
        if name not in self.done:
            self.done[name] = fn()
            self.path.write_text(json.dumps(self.done, indent=1))
        else:
            print(f"  {name}: reused from {self.path}", flush=True)
        return self.done[name]


def summary(outcome, tracking_uri: str) -> dict:
    """What the report needs of a search, with each trial's wall time (its child run's span)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = []
    for r in outcome.rows:
        info = client.get_run(r.run_id).info if r.run_id else None
        wall = (info.end_time - info.start_time) / 1000 if info and info.end_time else None
        rows.append({"trial_id": r.trial_id, "params": r.params, "state": r.state, "step": r.step, "metric": r.metric, "wall_s": wall})
    return {"wall_s": outcome.wall_s, "rows": rows, "best_params": outcome.best.params if outcome.best else None}


def estimated_baseline(searched: dict, steps: int) -> dict:
    """The no-early-stopping baseline without running it: every trial to `steps`; the wall time of
    each stopped trial replaced by the mean wall time of those that ran to the end."""
    full = [r["wall_s"] for r in searched["rows"] if r["state"] == "done" and r["wall_s"]]
    mean_full = statistics.mean(full)
    extra = sum(mean_full - (r["wall_s"] or 0) for r in searched["rows"] if r["state"] != "done")
    rows = [{**r, "step": steps, "metric": None} for r in searched["rows"]]
    return {"wall_s": searched["wall_s"] + extra, "rows": rows, "best_params": None, "estimated": True}


def steps_of(phase: dict) -> int:
    return sum(r["step"] or 0 for r in phase["rows"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", type=Path, default=REPO / "jobs/searches/quickstart-r1.yaml")
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--seeds", type=int, default=3, help="retraining seeds per arm")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--quick", action="store_true", help="tiny budget: a smoke check, not a measurement")
    ap.add_argument("--baseline", choices=["run", "estimate"], default="run",
                    help="run the no-early-stopping baseline (doubles the time), or estimate it from the search's own trials")
    args = ap.parse_args()

    from pipeline.tune.driver import run_search
    from pipeline.tune.spec import load_search

    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-tune-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    print(f"work folder {work}", flush=True)
    phases = Phases(work)
    asha = load_search(write_search(args.search, work / "search-asha.yaml", work=work, data=args.data, scheduler=None, quick=args.quick))
    fifo = load_search(write_search(args.search, work / "search-fifo.yaml", work=work, data=args.data, quick=args.quick,
                                    scheduler={"kind": "none"}, max_concurrent=1))
    assert asha.trials == fifo.trials, "the baseline must run the same trials"
    s, base = asha.spec, asha.base_job()

    print(f"1/3 search with {s.scheduler.kind}: {len(asha.trials)} trials × {base.train.steps} steps", flush=True)
    searched = phases.run("search", lambda: summary(run_search(asha, best_spec=work / "best-asha.yaml", show_progress=False), uri))
    print(f"  {searched['wall_s']:.0f} s, {steps_of(searched)} trial-steps, best {searched['best_params']}", flush=True)
    if args.baseline == "run":
        print("2/3 the same trials one after another, no early stopping", flush=True)
        full = phases.run("baseline", lambda: summary(run_search(fifo, best_spec=work / "best-fifo.yaml", show_progress=False), uri))
    else:
        print("2/3 the no-early-stopping baseline, estimated from the search's trials", flush=True)
        full = estimated_baseline(searched, base.train.steps)
    print(f"  {full['wall_s']:.0f} s, {steps_of(full)} trial-steps", flush=True)

    seeds = list(range(args.seeds))
    print(f"3/3 retraining over seeds {seeds}", flush=True)
    quick_fd = [phases.run(f"quickstart-seed{i}", lambda i=i: retrain(base, i, "quickstart", uri)) for i in seeds]
    tuned_job = asha.job_for(searched["best_params"])
    tuned_fd = [phases.run(f"tuned-seed{i}", lambda i=i: retrain(tuned_job, i, "tuned", uri)) for i in seeds]

    rank = None
    if not full.get("estimated"):
        # Where ASHA's pick ranks among all trials run to the end (1 = it found the best one).
        by_params = {tuple(sorted(r["params"].items())): r["metric"] for r in full["rows"]}
        ranked = sorted(by_params.values())
        rank = ranked.index(by_params[tuple(sorted(searched["best_params"].items()))]) + 1
    report(s, base, searched, full, quick_fd, tuned_fd, rank=rank, seeds=seeds)


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def report(s, base, searched: dict, full: dict, quick_fd, tuned_fd, *, rank: int | None, seeds: list[int]) -> None:
    params = list(s.space)
    quick_values = {p: _value(base, p) for p in params}
    print(f"\n| strengths | {' | '.join(params)} | " + " | ".join(f"FD seed {i}" for i in seeds) + " | FD mean ± sd |")
    print("|---|" + "---:|" * (len(params) + len(seeds) + 1))
    for label, values, fds in (("quickstart", quick_values, quick_fd), ("tuned", searched["best_params"], tuned_fd)):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (values[p] for p in params)]
        print(f"| {label} | {' | '.join(cells)} | " + " | ".join(f"{x:.3f}" for x in fds) + f" | {_mean_sd(fds)} |")
    ratio = statistics.mean(tuned_fd) / statistics.mean(quick_fd)
    saved = 1 - steps_of(searched) / steps_of(full)
    baseline = "no early stopping, one after another" + (" (estimated)" if full.get("estimated") else "")
    print(f"\n| search ({len(searched['rows'])} trials × {base.train.steps} steps) | wall s | trial-steps |")
    print("|---|---:|---:|")
    print(f"| {s.scheduler.kind}, {s.max_concurrent} at once | {searched['wall_s']:.0f} | {steps_of(searched)} |")
    print(f"| {baseline} | {full['wall_s']:.0f} | {steps_of(full)} |")
    print("\n| trial | " + " | ".join(params) + f" | state | last step | {s.metric} | wall s |")
    print("|---|" + "---:|" * len(params) + "---|---:|---:|---:|")
    for r in sorted(searched["rows"], key=lambda r: -(r["step"] or 0)):
        cells = [f"{r['params'][p]:.4g}" if isinstance(r["params"][p], float) else str(r["params"][p]) for p in params]
        metric = "" if r["metric"] is None else f"{r['metric']:.3f}"
        print(f"| {r['trial_id']} | {' | '.join(cells)} | {r['state']} | {r['step']} | {metric} | {r['wall_s'] or 0:.0f} |")
    stopped = sum(r["state"] == "stopped early" for r in searched["rows"])
    where = f"ASHA's pick ranks {rank} of {len(full['rows'])} by full-run FD" if rank else "full-run ranks not measured (baseline estimated)"
    print(f"\n{stopped} of {len(searched['rows'])} trials stopped early; {where}")
    print("\n| goal | measured | met |\n|---|---:|:---:|")
    print(f"| tuned mean FD <= 0.8 × quickstart's | {ratio:.2f} | {'yes' if ratio <= 0.8 else 'no'} |")
    print(f"| early stopping saves >= 40 % of trial-steps | {saved:.0%} | {'yes' if saved >= 0.4 else 'no'} |")
    print(f"| search wall time / one-after-another wall time | {searched['wall_s'] / full['wall_s']:.2f} | |")


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
