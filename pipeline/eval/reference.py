"""Reference statistics of the real images, cached per (extractor key, number of real samples).

Extracting features of the real set is the expensive half of an evaluation with Inception, and it
never changes for a fixed data set and extractor, so it is computed once. The key is the extractor
key (data manifest sha256 + extractor settings); which n real images were used is not part of it:
any n-sample of the same data set estimates the same distribution, and reusing one reference keeps
scores from successive evaluations comparable.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np
import torch

from .frechet import feature_stats

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
