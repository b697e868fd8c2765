"""What would another ASHA reduction factor have saved? Replays Ray's own ASHA bracket on the FD
curves a finished search recorded (its trials' child runs, in the order they started).

Exact for the reduction factor the search ran with (the replay must give its trial-steps back: a
check of the replay itself). For another factor it is exact when every value the replay needs was
recorded; a trial that would have gone past where the real search stopped it is listed, and its
steps from there on are missing from the total.

    .venv/bin/python bench/asha_replay.py --work /work/bench-tune-run --factors 2 3 4
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace


def curves(tracking_uri: str, search_id: str | None) -> tuple[str, list[tuple[str, dict[int, float]]]]:
    """(search id, [(trial id, {step: fd})]) of the newest (or named) search, trials in start order."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import names

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    role = f"tags.`{names.ROLE}`"
    if search_id is None:
        parents = client.search_runs(exp_ids, f"{role} = 'parent'", order_by=["attributes.start_time DESC"], max_results=1)
        search_id = parents[0].data.tags[names.SEARCH]
    trials = client.search_runs(exp_ids, f"tags.`{names.SEARCH}` = '{search_id}' and {role} = 'trial'",
                                order_by=["attributes.start_time ASC"])
    return search_id, [(t.data.tags[names.TRIAL_ID], {m.step: m.value for m in client.get_metric_history(t.info.run_id, names.EVAL_FD)})
                       for t in trials]


def replay(trials, *, every: int, steps: int, grace: int, factor: float) -> dict:
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket = _Bracket(min_t=grace * every, max_t=steps, reduction_factor=factor, s=0, stop_last_trials=False)
    spent, finished, missing = 0, {}, []
    for trial_id, curve in trials:
        trial = SimpleNamespace(trial_id=trial_id)
        for step in range(every, steps + 1, every):
            if step not in curve:
                missing.append(f"{trial_id}@{step}")
                break
            spent += every
            if bracket.on_result(trial, step, -curve[step]) == "STOP" and step < steps:  # ASHA maximises
                break
        else:
            finished[trial_id] = curve[steps]
    return {"rungs": sorted(m for m, _ in bracket._rungs), "trial_steps": spent, "finished": finished, "missing": missing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="bench/tune.py's work folder (its mlflow.db)")
    ap.add_argument("--search-id", help="default: the newest search in the store")
    ap.add_argument("--every", type=int, default=250, help="train.eval_every of the search")
    ap.add_argument("--steps", type=int, default=1500, help="train.steps of the search")
    ap.add_argument("--grace", type=int, default=1, help="scheduler.grace_period, in evals")
    ap.add_argument("--factors", type=float, nargs="+", default=[2, 3, 4])
    args = ap.parse_args()

    search_id, trials = curves(f"sqlite:///{args.work.resolve() / 'mlflow.db'}", args.search_id)
    total = args.steps * len(trials)
    print(f"search {search_id}: {len(trials)} trials × {args.steps} steps")
    print("| reduction factor | rungs (steps) | trial-steps | saved | ran to the end (FD) | values not recorded |")
    print("|---:|---|---:|---:|---|---|")
    for factor in args.factors:
        r = replay(trials, every=args.every, steps=args.steps, grace=args.grace, factor=factor)
        ends = ", ".join(f"{t[-5:]} {fd:.3f}" for t, fd in r["finished"].items())
        print(f"| {factor:g} | {', '.join(f'{m:g}' for m in r['rungs'])} | {r['trial_steps']} | {1 - r['trial_steps'] / total:.0%} "
              f"| {ends} | {', '.join(r['missing']) or 'none'} |")


if __name__ == "__main__":
    main()
