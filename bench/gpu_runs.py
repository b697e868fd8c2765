"""Helpers of bench/gpu.sh, runnable on any machine (no GPU needed):

    python bench/gpu_runs.py widest [--max-resolution 32]        # the job in jobs/ with the most G+D parameters
    python bench/gpu_runs.py summary --uri sqlite:///x.db --run-id ID --steps 300
                                                                 # one line: steps, samples/s, last losses, finite?
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def widest(max_resolution: int | None) -> int:
    """Build every job's networks on the CPU at its own resolution and print the path of the one with
    the most G+D parameters (among jobs at <= max_resolution px, when given)."""
    import torch

    from pipeline.spec import load_job
    from pipeline.train.build import build_networks
    from pipeline.train.regularization import Regularization

    best = None
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        try:
            spec = load_job(path, ["data.root=unused"])
            if max_resolution is not None and spec.data.resolution > max_resolution:
                continue
            if getattr(spec.model, "conditional", False) and spec.model.num_classes is None:
                spec = load_job(path, ["data.root=unused", "model.num_classes=10"])
            G, D = build_networks(spec.model, resolution=spec.data.resolution, regs=Regularization.from_specs(spec.regularization))
        except Exception as e:  # a job this checkout cannot build is reported, not fatal
            print(f"skipped {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        n = sum(p.numel() for m in (G, D) for p in m.parameters())
        print(f"{path.name}: {n / 1e6:.2f} M parameters (G+D) at {spec.data.resolution} px", file=sys.stderr)
        if best is None or n > best[0]:
            best = (n, path)
        del G, D
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if best is None:
        print("error: no job in jobs/ could be built", file=sys.stderr)
        return 1
    print(best[1].relative_to(REPO))
    return 0


def summary(uri: str, run_id: str, steps: int) -> int:
    """One markdown-ready line about a finished `ganpipe train` run, read back from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    history = lambda key: sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)  # noqa: E731
    seen = history("samples_seen")
    last_step = seen[-1].step if seen else 0
    rates = [m.value for m in history("samples_per_s") if m.step > steps // 3]  # after start-up and warm-up
    losses = {k: history(k) for k in ("loss/d", "loss/g")}
    last = {k: (h[-1].value if h else float("nan")) for k, h in losses.items()}
    finite = all(math.isfinite(m.value) for h in losses.values() for m in h) and all(losses.values())
    rate = f"{statistics.median(rates):,.0f}" if rates else "n/a"
    print(f"steps {last_step}/{steps}, samples/s {rate} (median after step {steps // 3}), "
          f"last loss/d {last['loss/d']:.3f}, loss/g {last['loss/g']:.3f}, losses finite: {'yes' if finite else 'NO'}")
    return 0 if finite and last_step == steps else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("widest")
    w.add_argument("--max-resolution", type=int, help="only jobs at this many px or fewer")
    s = sub.add_parser("summary")
    s.add_argument("--uri", required=True)
    s.add_argument("--run-id", required=True)
    s.add_argument("--steps", type=int, required=True)
    args = ap.parse_args()
    return widest(args.max_resolution) if args.cmd == "widest" else summary(args.uri, args.run_id, args.steps)


if __name__ == "__main__":
    sys.exit(main())
