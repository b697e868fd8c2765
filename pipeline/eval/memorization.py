"""Does the generator copy its training data? The memorization share, and the held-out split it needs.

Definition (all distances Euclidean in the evaluation's feature space φ, the one FD uses):
- R: the real images an evaluation reads (manifest order, at most scorer.MAX_REAL of them).
- Held-out split H ⊂ R: the samples whose WebDataset key k has
      int(sha256(k)[:8], 16) / 2**32 < heldout_fraction            (EvalSpec.heldout_fraction, 0.1)
  and the reference training set T = R \\ H. A hash of the key, not a position: membership does not
  depend on reading order or on how many images are read, and the training stream can apply the
  same `is_heldout` predicate to keep H out of training (today it does not; see below).
- d(x) = min_{t ∈ T} |φ(x) − φ(t)|, the distance from x to its nearest training image.
- τ = the MEMORIZATION_QUANTILE (5%) quantile of {d(y) : y ∈ H}: "closer to the training set than
  95% of genuinely new real images are".
- memorization = share of generated samples g with d(g) < τ.

Why the 5% quantile and not the median: a generator that draws new images from the data distribution
(independent of T) lands below the q-quantile with probability q, so its expected share is q. With
the median that baseline is 50%: an ideal generator would look half-memorized, and any bound such
as `--max-memorization 0.2` would refuse it. With q = 5%, the share reads as "5% baseline + excess
closeness to training images": near 0.05 for a generator that generalizes, below it for a blurry or
off-distribution one (its samples are far from everything), towards 1 for one that replays training
images (d = 0 < τ). 5% rather than 1%: H holds only ~10% of at most 10k images (~180 for the digits),
and a 1% quantile of 180 values rests on one or two order statistics; 5% rests on about nine.
MIN_HELDOUT bounds that from below.

Caveats, stated so nobody over-reads the number:
- H is held out from this metric's reference set, not (yet) from training: a generator that copies
  the held-out images is not flagged for those copies, so a generator replaying the whole data set
  scores about (1 − f) + f·q (≈ 0.9 at f = 0.1), and one replaying T scores 1.
- It sees what the feature space sees. Measured on the digits (classifier features, 2000 samples):
  replaying T 1.00, replaying all images 0.905, replaying H 0.05, blurred copies 0.98, copies with
  Gaussian noise σ=0.5 0.37, copies shifted by 2 px 0.01: a shifted copy is "new" to these features.
- τ = 0 (at least q of H has exact feature duplicates in T) would make the share 0 even for exact
  copies, and fewer than MIN_HELDOUT held-out images cannot place τ: in both cases evaluate() reports
  memorization None with the reason (memorization_note) rather than a meaningless number, and the
  other scores as usual.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

MEMORIZATION_QUANTILE = 0.05
MIN_HELDOUT = 20  # at q = 5%, the quantile then interpolates between the two smallest distances at worst
SPLIT_RULE = "int(sha256(__key__)[:8], 16) / 2**32 < heldout_fraction"  # recorded in the evaluator key


def is_heldout(key: str, fraction: float) -> bool:
    """Whether the sample with WebDataset key `key` belongs to the held-out split."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < fraction


class MemorizationUndefined(ValueError):
    """The real data cannot calibrate τ, so a share would mean nothing: evaluate() then reports
    memorization None with this reason instead of failing (a training run's final eval included)."""


def heldout_mask(keys: Sequence[str], fraction: float) -> Tensor:
    """(N,) bool: which real images are held out."""
    return torch.tensor([is_heldout(k, fraction) for k in keys], dtype=torch.bool)


def threshold(heldout_nn: Tensor | np.ndarray, *, fraction: float) -> float:
    """τ: the MEMORIZATION_QUANTILE quantile of the held-out images' distances to the training set.

    `heldout_nn` is empty when either side of the split is: fraction is named in the reason.
    """
    held = len(heldout_nn)
    if held < MIN_HELDOUT:
        raise MemorizationUndefined(
            f"eval.heldout_fraction={fraction} gives {held} held-out images with training images to compare "
            f"to; the threshold needs at least {MIN_HELDOUT}: raise heldout_fraction (at most 0.5) or "
            "evaluate on a larger data set")
    tau = float(np.quantile(np.asarray(heldout_nn, dtype=np.float64), MEMORIZATION_QUANTILE))
    if tau <= 0.0:
        raise MemorizationUndefined(
            f"more than {MEMORIZATION_QUANTILE:.0%} of the held-out images have exact duplicates in the "
            "training set (in feature space): the share cannot tell copies from new images on this data "
            "set; deduplicate it")
    return tau


def memorization_share(generated_nn: Tensor, tau: float) -> float:
    """Share of generated samples strictly closer to their nearest training image than τ."""
    return float((generated_nn < tau).float().mean())
