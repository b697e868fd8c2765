"""What precision/recall and the memorization share add to an evaluation's time, measured side by side.

One evaluation = draw n latents → generator → features → scores. FD and KID were its only scores;
precision/recall (manifold.py) and memorization (memorization.py) add distance computations on the
same features. This script times, on the same generated features, in interleaved rounds (best round
reported, as in bench/data.py, so a neighbour's burst on a shared machine hits every part alike):
- (a) the FD/KID evaluation: sampling, generator, feature extraction, FD, KID;
- (b) what the new scores add per evaluation: generated k-NN radii, precision, recall, NN distances;
- (c) the one-time real side of (b) (cached per evaluator key): real k-NN radii, held-out distances.
and prints the scores of the generator it evaluated.

    .venv/bin/python bench/eval_metrics.py                        # digits, quickstart's G (random init), n=2000
    .venv/bin/python bench/eval_metrics.py --checkpoint ray_results/<run>/checkpoint_<...>  # a trained EMA G
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.data.config import DataSpec
from pipeline.data.manifest import load_manifest
from pipeline.data.pack import pack
from pipeline.eval.config import EvalSpec
from pipeline.eval.extractors import load_extractor
from pipeline.eval.frechet import feature_stats, frechet_distance, kernel_inception_distance
from pipeline.eval.manifold import NHOOD_K, knn_radii, nn_distance, precision_recall
from pipeline.eval.memorization import heldout_mask, memorization_share, threshold
from pipeline.eval.scorer import read_real_set
from pipeline.gan.models import build_models


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="packed data set (default: digits packed into a temp folder)")
    p.add_argument("--checkpoint", help="training checkpoint folder (state.pt): score its EMA generator")
    p.add_argument("-n", type=int, default=2000, help="generated samples per evaluation (quickstart: 2000)")
    p.add_argument("--classifier-steps", type=int, default=300)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)  # training's rank-0 eval runs with 1 torch thread
    tmp = tempfile.mkdtemp(prefix="bench-eval-")
    root = args.data or str(Path(tmp) / "digits")
    if not args.data:
        pack("digits", root, shard_size=500, resolution=32, progress=False)
    _, sha = load_manifest(root)
    spec = EvalSpec(num_samples=args.n, classifier_steps=args.classifier_steps, cache_dir=args.cache_dir or tmp)
    images, labels, keys = read_real_set(DataSpec(root=root, resolution=32))
    extractor = load_extractor(spec, sha, lambda: (images, labels))

    G, _ = build_models(kind="dcgan", z_dim=100, g_width=32, d_width=64, resolution=32, g_norm="batch", d_dropout=0.0)
    if args.checkpoint:
        state = torch.load(Path(args.checkpoint) / "state.pt", map_location="cpu", weights_only=True)
        G.load_state_dict(state["ema"] if state.get("ema") is not None else state["G"])
    G.eval()

    real_feats = extractor(images)
    held = heldout_mask(keys, spec.heldout_fraction)
    rows = {"a": [], "b": [], "c": []}
    for _ in range(args.rounds):
        # (c) the one-time real side, cached beside the FD/KID reference statistics
        (radii, held_nn), t = _timed(lambda: (knn_radii(real_feats, NHOOD_K), nn_distance(real_feats[held], real_feats[~held])))
        rows["c"].append(t)
        mu_r, sigma_r = feature_stats(real_feats)

        def fd_kid():
            rng, feats = torch.Generator().manual_seed(0), []
            with torch.no_grad():
                for start in range(0, args.n, 250):
                    z = torch.randn(min(250, args.n - start), 100, generator=rng)
                    feats.append(extractor(G(z)))
            feats = torch.cat(feats)
            mu, sigma = feature_stats(feats)
            return feats, frechet_distance(mu, sigma, mu_r, sigma_r), kernel_inception_distance(feats, real_feats)

        (feats, fd, kid), t = _timed(fd_kid)
        rows["a"].append(t)

        def added():
            pr = precision_recall(real_feats, feats, k=NHOOD_K, real_radii=radii)
            return pr, memorization_share(nn_distance(feats, real_feats[~held]), threshold(held_nn, fraction=spec.heldout_fraction))

        ((prec, rec), mem), t = _timed(added)
        rows["b"].append(t)

    best = {k: min(v) for k, v in rows.items()}
    print(f"digits: {len(images)} real ({int(held.sum())} held out), n={args.n} generated, "
          f"{real_feats.shape[1]}-d classifier features, 1 torch thread, best of {args.rounds} rounds")
    print(f"{'part':58s} {'seconds':>8s}")
    print(f"{'(a) FD/KID evaluation (sample, G, features, FD, KID)':58s} {best['a']:8.3f}")
    print(f"{'(b) added per evaluation (precision, recall, memorization)':58s} {best['b']:8.3f}")
    print(f"{'(c) added once per evaluator key (real radii, held-out NN)':58s} {best['c']:8.3f}")
    print(f"(b)/(a) = {best['b'] / best['a']:.3f}")
    print(f"scores: fd {fd:.4f} kid {kid:.5f} precision {prec:.4f} recall {rec:.4f} memorization {mem:.4f}")


if __name__ == "__main__":
    main()
