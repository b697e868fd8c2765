"""Training throughput per device: images/s of one GanStep loop, for every model kind, at 32 and 64 px.

    .venv/bin/python bench/gpu_throughput.py --out bench-gpu            # CUDA, bf16 autocast
    .venv/bin/python bench/gpu_throughput.py --device cpu --steps 3     # smoke check of the script

Each kind in pipeline.gan.config.ModelSpec.kind is measured (a kind added there, such as r3gan, is
picked up without touching this file) with the recipe of a job in jobs/ that uses it: a job written
for that resolution first, then the largest network (r3gan: the paper's presets) on a GPU; on a CPU
the smallest at any resolution; ties go to quickstart.yaml, then the name. A kind no job uses gets the spec's defaults
(the first preset where it needs one) and a plain nonsaturating loss. The table names the job.
Networks and parts come from pipeline/train/build.py and the step is pipeline/train/step.GanStep, as
a Ray worker builds them; no Ray, no DDP, no data loading: the reals are random tensors already on
the device, so the figure is the step's own ceiling on one device. One process, one device: on CUDA,
images/s per device is images/s per GPU.

Timing: `--warmup` steps (cuDNN autotuning, optimizer state, lazy regularizers), then `--steps` steps
between two synchronisations; steps default to a multiple of 16 so lazy penalties (every 4 or 16)
run their share. Writes one markdown table to stdout and to OUT/gpu_throughput.md.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import get_args

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

from pipeline.gan.config import ModelSpec  # noqa: E402
from pipeline.spec import load_job  # noqa: E402
from pipeline.train.build import build_parts  # noqa: E402
from pipeline.train.regularization import Regularization  # noqa: E402
from pipeline.train.step import GanStep  # noqa: E402

JOBS = REPO / "jobs"
PREFERRED_JOB = {"dcgan": "quickstart.yaml"}
DEFAULT_CLASSES = 10  # a conditional recipe gets this many classes (the driver reads them from a manifest)


def _literal_values(annotation) -> list:
    """The values of a Literal (possibly nested in Annotated/Union/aliases), in declaration order."""
    out = []
    for a in get_args(annotation):
        out += _literal_values(a) if get_args(a) else [a] if isinstance(a, str) else []
    return out


def model_kinds() -> list[str]:
    return _literal_values(ModelSpec.model_fields["kind"].annotation)


def _jobs_of(kind: str) -> list[Path]:
    uses = []
    for path in sorted(JOBS.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            continue
        if isinstance(raw, dict) and (raw.get("model") or {}).get("kind", "dcgan") == kind:
            uses.append(path)
    return uses


def default_model(kind: str) -> dict:
    """A valid model section of `kind` from the spec's defaults (plus the first preset where it needs one)."""
    try:
        ModelSpec(kind=kind)
        return {"kind": kind}
    except ValueError:
        pass
    if "preset" in ModelSpec.model_fields:  # e.g. r3gan: exactly one of preset/widths
        for preset in _literal_values(ModelSpec.model_fields["preset"].annotation):
            try:
                ModelSpec(kind=kind, preset=preset)
                return {"kind": kind, "preset": preset}
            except ValueError:
                continue
    return {"kind": kind}  # let load_job say what is missing


def _load(path: Path, sets: list[str]):
    spec = load_job(path, sets)
    if getattr(spec.model, "conditional", False) and spec.model.num_classes is None:
        spec = load_job(path, sets + [f"model.num_classes={DEFAULT_CLASSES}"])  # the driver reads it from a manifest
    return spec


def _params(spec) -> int:
    from pipeline.train.build import build_networks

    G, D = build_networks(spec.model, resolution=spec.data.resolution, regs=Regularization.from_specs(spec.regularization))
    return sum(p.numel() for m in (G, D) for p in m.parameters())


def load_recipe(kind: str, resolution: int, batch: int, *, pick: str):
    """(JobSpec, label) measured for `kind` at `resolution` with `batch` images per step. Among the jobs
    of that kind that build at this resolution, pick="largest" takes those written for it first, then
    the most G+D parameters (on a GPU: the paper-sized network); "smallest" the fewest parameters at any
    native resolution (a CPU smoke check). Ties go to PREFERRED_JOB, then to the name. No job of the
    kind: the spec's defaults."""
    sets = [f"data.resolution={resolution}", "data.root=unused", f"train.global_batch={batch}",
            "scaling.num_workers=1", "eval=null"]
    candidates = []
    for path in _jobs_of(kind):
        try:
            native = (yaml.safe_load(path.read_text()).get("data") or {}).get("resolution") == resolution
            spec = _load(path, sets)
            size = _params(spec)
        except Exception:  # this job's network does not exist at this resolution (a preset too short)
            continue
        preferred = path.name == PREFERRED_JOB.get(kind)
        key = (not native, -size) if pick == "largest" else (size,)  # smallest: speed first, any resolution
        candidates.append(((*key, not preferred, path.name), spec, path.name))
    if candidates:
        _, spec, name = min(candidates, key=lambda c: c[0])
        return spec, name
    model = yaml.safe_dump(default_model(kind), default_flow_style=True).strip()
    bare = sets + [f"model={model}", "regularization=[]", "loss.kind=nonsaturating"]
    return _load(JOBS / "quickstart.yaml", bare), "(spec defaults, no regularizers)"


def measure(kind: str, resolution: int, batch: int, *, device: torch.device, precision: str, warmup: int, steps: int,
            pick: str) -> dict:
    spec, job = load_recipe(kind, resolution, batch, pick=pick)
    regs = Regularization.from_specs(spec.regularization)
    torch.manual_seed(0)
    parts = build_parts(spec.model, spec.optim, resolution=resolution, regs=regs, device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    step = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=batch, z_dim=spec.model.z_dim, autocast=autocast)
    real = (torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1)
    labels = None
    if getattr(spec.model, "conditional", False):
        labels = torch.randint(spec.model.num_classes, (batch,), device=device)
    run = (lambda i: step(i, real, labels)) if labels is not None else (lambda i: step(i, real))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stats = {}
    for i in range(warmup):
        stats = run(i)
    sync()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        stats = run(i)
    sync()
    secs = time.perf_counter() - t0
    # Read once, after the clock stopped: loss/d, loss/g and the penalties (reg/...) must be finite.
    losses = {k: float(v) for k, v in stats.items() if k.startswith(("loss/", "reg/")) and not k.endswith("_weight")}
    params = sum(p.numel() for m in (parts.G, parts.D) for p in m.parameters())
    return {"job": job, "images_s": steps * batch / secs, "step_ms": secs / steps * 1e3, "params_m": params / 1e6,
            "finite": all(math.isfinite(v) for v in losses.values()), "losses": losses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--precision", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--batch", type=int, nargs="+", help="images per step on the device (default: 64 256 on cuda, 8 on cpu)")
    ap.add_argument("--pick", choices=["largest", "smallest"],
                    help="which job of a kind to measure when several fit (default: largest on cuda, smallest on cpu)")
    ap.add_argument("--kinds", nargs="+", help="default: every ModelSpec.kind")
    ap.add_argument("--steps", type=int, default=64, help="timed steps per cell")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: 16 on cuda, 1 on cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=REPO / "bench-gpu", help="folder for gpu_throughput.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    on_gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (16 if on_gpu else 1)
    batches = args.batch or ([64, 256] if on_gpu else [8])
    pick = args.pick or ("largest" if on_gpu else "smallest")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (f"{name}, torch {torch.__version__}, {precision}, {warmup} warm-up + {args.steps} timed steps per cell, "
            f"reals already on the device, one process")
    print(head, flush=True)
    rows, failed = [], 0
    for kind in args.kinds or model_kinds():
        for resolution in args.resolutions:
            for batch in batches:
                try:
                    r = measure(kind, resolution, batch, device=device, precision=precision, warmup=warmup, steps=args.steps, pick=pick)
                    ok = "yes" if r["finite"] else "NO"
                    failed += not r["finite"]
                    row = (f"| {kind} | {r['job']} | {resolution} | {batch} | {r['params_m']:.2f} | {r['step_ms']:.1f} | "
                           f"{r['images_s']:,.0f} | {ok} |")
                except Exception as e:  # one cell's failure (a kind refusing a resolution, OOM) is a row, not the end
                    failed += 1
                    reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
                    row = f"| {kind} | | {resolution} | {batch} | | | failed: {type(e).__name__}: {reason} | |"
                    traceback.print_exc(limit=3)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(row, flush=True)
    table = "\n".join([
        f"Training throughput per device ({head})", "",
        "| kind | recipe (job) | px | batch | G+D params (M) | ms/step | images/s per device | losses finite |",
        "|---|---|---:|---:|---:|---:|---:|:---:|", *rows,
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_throughput.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwritten to {args.out / 'gpu_throughput.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
