"""Does the generator copy its training data? The memorization share, and the held-out split it needs.

Definition (all distances Euclidean in the evaluation's feature space φ, the one FD uses):
- R: the real images an evaluation reads (manifest order, at most scorer.MAX_REAL of them).
- Held-out split H ⊂ R: the samples whose WebDataset key k has
      int(sha256(k)[:8], 16) / 2**32 < heldout_fraction            (EvalSpec.heldout_fraction, 0.1)
  and the reference training set T = R \\ H. A hash of the key, not a position: membership does not
  depend on reading order or on how many images are read, and the training stream applies the same
  predicate (pipeline/data/split.py) to keep H out of training whenever the job evaluates or gates
  (pipeline/train/worker.py), so a generator can copy T but never H.
- V(x): 26 views of an image x: {x, hflip(x)} × {no shift, a shift by ±1, ±2 or ±3 px along x, the
  same along y}, edges replicated (VIEWS_RULE).
- d(x) = min_{v ∈ V(x)} min_{t ∈ T} |φ(v) − φ(t)|: the distance from x, once a flip or a small
  shift is undone, to its nearest training image.
- τ = the MEMORIZATION_QUANTILE (5%) quantile of {d(y) : y ∈ H}: "closer to the training set than
  95% of genuinely new real images are".
- memorization = share of generated samples g with d(g) < τ, over the first MAX_SAMPLES of them.

Why the views: with d taken on x alone, a copy shifted by 2 px scored 0.01 on the digits (classifier
features, below): the features move further under a 2 px shift than from one digit to the next.
Undoing the transform on the generated side brings the copy back to d ≈ 0, while both sides of the
comparison (generated g and held-out y) go through the same min over V, so the baseline argument
below still holds and τ shrinks just enough to keep new images at ~5%. The views cover what GAN
training and augmentation produce: mirror images (hflip), small translations (DiffAugment's
translation, crops), and their combinations; JPEG re-encoding needs no view: it moves features
far less than τ (measured below). A shift along both axes at once (say 2 px right and 2 down) is not
undone (measured below): covering the 7×7 grid of shifts would cost 98 views instead of 26.

Why the 5% quantile and not the median: a generator that draws new images from the data distribution
(independent of T) lands below the q-quantile with probability q, so its expected share is q. With
the median that baseline is 50%: an ideal generator would look half-memorized, and any bound such
as `--max-memorization 0.2` would refuse it. With q = 5%, the share reads as "5% baseline + excess
closeness to training images": near 0.05 for a generator that generalizes, below it for a blurry or
off-distribution one (its samples are far from everything), towards 1 for one that replays training
images (d = 0 < τ). 5% rather than 1%: H holds only ~10% of at most 10k images (~180 for the digits),
and a 1% quantile of 180 values rests on one or two order statistics; 5% rests on about nine.
MIN_HELDOUT bounds that from below.

Cost: each scored sample passes through the extractor once per view (26×), so the share is taken
over the first MAX_SAMPLES generated samples (its standard error at the 5% baseline is then < 0.007);
the held-out side is computed once per evaluator key and cached (reference.real_manifold).

Caveats, stated so nobody over-reads the number:
- It sees what the feature space sees. Measured on the digits (the default classifier, 2000 samples
  of which the first 1000 count): replaying T 1.00; T mirrored 1.00, shifted 2 px 1.00, re-encoded
  as JPEG at quality 75 1.00; replaying H (new real images) 0.055. Still partly missed: T shifted
  along both axes, (1, 1) px 0.24 and (2, 2) px 0.03; T blurred (3×3 box) 0.75 and with Gaussian
  noise σ = 0.5 0.15, where the identity-only share gave 0.98 and 0.37: the views lower τ (5% of
  new images are closer to training images once shifts are allowed), so a perturbation that no view
  undoes has a tighter bound to fall under. A copy of the held-out images is not flagged (it is new
  to the training set); one of the whole data set (T and H) scores about (1 − f) + f·q (0.91 at
  f = 0.1), which a generator trained with H kept out cannot produce.
- τ = 0 (at least q of H has exact feature duplicates in T) would make the share 0 even for exact
  copies, and fewer than MIN_HELDOUT held-out images cannot place τ: in both cases evaluate() reports
  memorization None with the reason (memorization_note) rather than a meaningless number, and the
  other scores as usual.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.data.split import SPLIT_RULE, is_heldout  # noqa: F401  (the split is the data plane's)

from .manifold import nn_distance
from .rules import MEMORIZATION_QUANTILE, VIEW_SHIFTS  # and VIEWS_RULE, MEMORIZATION_SAMPLES (MAX_SAMPLES above)

MIN_HELDOUT = 20  # at q = 5%, the quantile then interpolates between the two smallest distances at worst
NUM_VIEWS = 2 * (1 + 4 * len(VIEW_SHIFTS))  # 26


def shift(images: Tensor, dx: int, dy: int) -> Tensor:
    """(N, C, H, W) moved dx px right and dy px down; the edge rows/columns fill what is uncovered."""
    p = max(abs(dx), abs(dy))
    if p == 0:
        return images
    h, w = images.shape[-2:]
    padded = F.pad(images, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def views(images: Tensor) -> Iterator[Tensor]:
    """The NUM_VIEWS views of a batch, the images themselves first."""
    for base in (images, images.flip(-1)):
        yield base
        for s in VIEW_SHIFTS:
            for d in (s, -s):
                yield shift(base, d, 0)
                yield shift(base, 0, d)


def view_distance(images: Tensor, extract: Callable[[Tensor], Tensor], reference: Tensor,
                  *, identity: Tensor | None = None) -> Tensor:
    """(N,) d(x) above: the least distance from any view of each image to its nearest `reference` row.
    `identity`: extract(images), when the caller has it already (the first view is then free)."""
    best = None
    for i, view in enumerate(views(images)):
        feats = identity if (i == 0 and identity is not None) else extract(view)
        d = nn_distance(feats, reference)
        best = d if best is None else torch.minimum(best, d)
    return best


class MemorizationUndefined(ValueError):
    """The real data cannot calibrate τ, so a share would mean nothing: evaluate() then reports
    memorization None with this reason instead of failing (a training run's final eval included)."""


def heldout_mask(keys: Sequence[str], fraction: float) -> Tensor:
    """(N,) bool: which real images are held out."""
    return torch.tensor([is_heldout(k, fraction) for k in keys], dtype=torch.bool)


def threshold(heldout_nn: Tensor | np.ndarray, *, fraction: float) -> float:
    """τ: the MEMORIZATION_QUANTILE quantile of the held-out images' distances d to the training set.

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
