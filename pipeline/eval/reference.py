"""Reference statistics of the real images, cached per (extractor key, number of real samples), and
the real side of precision/recall and memorization (real_manifold), cached per evaluator key.

Extracting features of the real set is the expensive half of an evaluation with Inception, and it
never changes for a fixed data set and extractor, so it is computed once. The key is the extractor
key (data manifest sha256 + extractor settings); which n real images were used is not part of it:
any n-sample of the same data set estimates the same distribution, and reusing one reference keeps
scores from successive evaluations comparable.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .frechet import feature_stats
from .manifold import knn_radii, nn_distance

# Rows kept for KID (which needs samples, not moments). KID uses subsets of <= 1000 rows, so a few
# thousand are plenty, and this caps the file at ~80 MB for 2048-d Inception features.
MAX_KID_ROWS = 10_000


def reference_stats(cache_dir: str, key: str, compute: Callable[[], torch.Tensor], *, n: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, feats_for_kid) from cache_dir/<key>/reference-<n>.npz, or from compute() (N=n, D).

    `n` must be known before computing so that a cache hit never calls compute; a compute that
    returns a different count is refused rather than cached under the wrong name.
    """
    path = os.path.join(os.path.expanduser(cache_dir), key, f"reference-{n}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return z["mu"], z["sigma"], z["feats"]
    feats = compute()
    feats = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if feats.ndim != 2 or len(feats) != n:
        raise ValueError(f"reference features should be ({n}, D), got {feats.shape}")
    mu, sigma = feature_stats(feats)
    if len(feats) > MAX_KID_ROWS:
        feats = feats[np.random.default_rng(seed).choice(len(feats), MAX_KID_ROWS, replace=False)]
    kid_feats = feats.astype(np.float32)
    _atomic_savez(path, mu=mu, sigma=sigma, feats=kid_feats)
    return mu, sigma, kid_feats


@dataclass(frozen=True)
class RealManifold:
    """The real side of precision/recall and memorization; depends on no generator."""
    feats: torch.Tensor        # (N, D) every real image read, manifest order
    radii: torch.Tensor        # (N,) k-NN radii within feats: the real manifold for precision
    heldout: torch.Tensor      # (N,) bool: the held-out split (memorization.heldout_mask)
    heldout_nn: torch.Tensor   # (H,) each held-out image's distance d to the training set (memorization.py)

    @property
    def train_feats(self) -> torch.Tensor:
        return self.feats[~self.heldout]


def real_manifold(cache_dir: str, extractor_dir: str, evaluator_key: str, compute: Callable[[], torch.Tensor],
                  *, heldout: torch.Tensor, k: int,
                  heldout_distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> RealManifold:
    """From cache_dir/<extractor_dir>/manifold-<evaluator_key>.npz, or from compute() (N, D).

    The file keeps all N real features (for precision and the nearest-neighbour search), so the
    per-evaluation cost is the generated side only; ~80 MB for 10k Inception features.
    `heldout_distance(heldout_feats, train_feats)` → (H,) is the memorization distance d of the
    held-out images (evaluate() passes the min over views, which needs the images); by default
    the plain nearest-neighbour distance of their features.
    """
    path = os.path.join(os.path.expanduser(cache_dir), extractor_dir, f"manifold-{evaluator_key}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            cached = RealManifold(*(torch.from_numpy(z[f]) for f in ("feats", "radii", "heldout", "heldout_nn")))
        if torch.equal(cached.heldout, heldout):
            return cached
        # Same key, other split: cannot happen unless the data changed under an unchanged manifest.
        raise ValueError(f"{path} was computed for another held-out split; delete it to recompute")
    feats = compute()
    feats = (feats if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats))).float().cpu()
    if feats.ndim != 2 or len(feats) != len(heldout):
        raise ValueError(f"real features should be ({len(heldout)}, D), got {tuple(feats.shape)}")
    # An empty side (tiny data sets) leaves no distances: memorization.threshold then says why.
    both_sides = bool(heldout.any()) and not bool(heldout.all())
    distance = heldout_distance or nn_distance
    heldout_nn = distance(feats[heldout], feats[~heldout]).float().cpu() if both_sides else torch.empty(0)
    result = RealManifold(feats, knn_radii(feats, k), heldout.clone(), heldout_nn)
    _atomic_savez(path, feats=result.feats.numpy(), radii=result.radii.numpy(), heldout=result.heldout.numpy(),
                  heldout_nn=result.heldout_nn.numpy())
    return result


def _atomic_savez(path: str, **arrays) -> None:
    # Temp file + os.replace: concurrent evaluators or a crash leave a whole file or none.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
