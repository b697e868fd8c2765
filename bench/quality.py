"""Quality benchmark: FD (classifier features) at a few step counts, per recipe, against a plain DCGAN.

Every recipe in jobs/ and the baseline (the seed's DCGAN with no regularization at all) train on the
same digits shards with the same steps, global batch and seed, one after another in this process
(1 worker, 1 torch thread, no Ray: the step function is the production one, GanStep). Time per step
excludes evaluation. Prints one table; ratios are against the baseline measured in the same run.

    .venv/bin/python bench/quality.py --data data/digits --steps 1000 --eval-at 250,500,1000
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pipeline.data.manifest import load_manifest
from pipeline.data.stream import make_batches
from pipeline.eval.config import EvalSpec
from pipeline.eval.scorer import GeneratorScorer
from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep, unwrap

REPO = Path(__file__).resolve().parents[1]


def run(job: Path, *, data: str, steps: int, batch: int, eval_at: list[int], scorer, baseline: bool) -> dict:
    overrides = [f"data.root={data}", f"train.steps={steps}", f"train.global_batch={batch}", "scaling.num_workers=1"]
    if baseline:
        overrides += ["regularization=[]"]
    spec = load_job(job, overrides)
    regs = Regularization.from_specs(spec.regularization)
    torch.manual_seed(spec.train.seed)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device="cpu")
    step_fn = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=batch, z_dim=spec.model.z_dim, seed=spec.train.seed)
    batches = iter(make_batches(spec.data, rank=0, world_size=1, batch_size=batch, seed=spec.train.seed))
    fd, train_s = {}, 0.0
    for step in range(steps):
        real, _ = next(batches)
        t0 = time.perf_counter()
        step_fn(step, real)
        train_s += time.perf_counter() - t0
        if step + 1 in eval_at:
            g = parts.ema.module if parts.ema is not None else unwrap(parts.G)
            g.eval()
            with torch.no_grad():
                fd[step + 1] = scorer(g, spec.model.z_dim)["fd"]
            g.train()
    return {"fd": fd, "s_per_step": train_s / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-at", default="250,500,1000")
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--jobs", nargs="*", help="job files (default: every jobs/*.yaml but the quickstart)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    eval_at = [int(s) for s in args.eval_at.split(",")]
    data = str(Path(args.data).resolve())
    jobs = [Path(j) for j in args.jobs] if args.jobs else sorted(p for p in (REPO / "jobs").glob("*.yaml") if p.stem != "quickstart")
    base_job = REPO / "jobs/dcgan-l2.yaml"
    seed_spec = load_job(base_job, [f"data.root={data}"])
    _, manifest_sha = load_manifest(data)
    scorer = GeneratorScorer(EvalSpec(num_samples=args.num_samples), seed_spec.data, manifest_sha)

    rows = [("baseline (dcgan, no reg.)", run(base_job, data=data, steps=args.steps, batch=args.batch, eval_at=eval_at, scorer=scorer, baseline=True))]
    print(f"{rows[0][0]}: {rows[0][1]}", flush=True)
    for job in jobs:
        rows.append((job.stem, run(job, data=data, steps=args.steps, batch=args.batch, eval_at=eval_at, scorer=scorer, baseline=False)))
        print(f"{job.stem}: {rows[-1][1]}", flush=True)

    base = rows[0][1]
    head = "| recipe | " + " | ".join(f"FD@{s}" for s in eval_at) + f" | FD@{eval_at[-1]} / baseline | s/step | time / baseline |"
    print("\n" + head)
    print("|" + "---|" * (len(eval_at) + 4))
    for name, r in rows:
        fds = " | ".join(f"{r['fd'][s]:.2f}" for s in eval_at)
        print(f"| {name} | {fds} | {r['fd'][eval_at[-1]] / base['fd'][eval_at[-1]]:.2f} | {r['s_per_step']:.3f} | {r['s_per_step'] / base['s_per_step']:.2f} |")
    print(f"\n{args.steps} steps, global batch {args.batch}, 1 process × 1 torch thread, FD on {args.num_samples} samples (classifier features)")


if __name__ == "__main__":
    main()
