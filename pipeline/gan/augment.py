"""Differentiable augmentation of everything D sees, real and fake alike.

DiffAugment (Zhao et al., NeurIPS 2020) applies the same family of random, differentiable transforms to
real and generated images before D, every time; G's gradient flows back through the transform, so D
cannot learn the augmentations as "the data" and G is not taught to produce augmented images. The three
policies follow the authors' DiffAugment_pytorch.py:
  color        brightness  x + U(−½, ½)                       per sample
               saturation  m_c + (x − m_c)·U(0, 2)            m_c: per-pixel mean over channels
               contrast    m + (x − m)·U(½, 3/2)              m: per-image mean
  translation  shift by up to ⌊R/8 + ½⌋ pixels in each axis, zeros shifted in (R=32: ±4 px)
  cutout       zero one square of side ⌊R/2 + ½⌋ at a random centre, clipped at the borders

ADA (Karras et al., NeurIPS 2020, stylegan2-ada) instead applies each transform to each sample with
probability p, and steers p so that D stays just-so overfitted: r_t = E[sign(D(real))] is ≈ 0 for a D
that cannot tell real from fake and → 1 for one that memorised the training set; p rises while
r_t > target (0.6) and falls otherwise. The transforms here are DiffAugment's, not ADA's 18-op pipeline.

All randomness comes from `generator` when given: a torch.Generator, or a SliceOfGlobalBatch (what the
training step passes) whose draws are this rank's rows of draws made for the whole global batch, so that
1 worker × B and 2 workers × B/2 augment every sample alike. Draws are made on the generator's device and
moved to the images' device, so a CPU generator also drives CUDA images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

POLICIES = ("color", "translation", "cutout")


# -- random draws ---------------------------------------------------------------------------------


class SliceOfGlobalBatch:
    """Draws for rows [rank·n, (rank+1)·n) of a batch split evenly over `world` ranks: each draw of n
    rows makes n·world rows from `generator` and keeps this rank's. Every rank then consumes the
    generator identically, and a sample gets the same numbers whatever the worker count."""

    def __init__(self, generator: torch.Generator, *, rank: int, world: int):
        self.generator, self.rank, self.world = generator, rank, world

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def _rows(self, full: Tensor, n: int) -> Tensor:
        return full[self.rank * n : (self.rank + 1) * n]

    def rand(self, n: int, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        return self._rows(torch.rand(n * self.world, *shape, generator=self.generator, device=self.device, dtype=dtype), n)

    def randint(self, low: int, high: int, n: int) -> Tensor:
        return self._rows(torch.randint(low, high, (n * self.world,), generator=self.generator, device=self.device), n)


Draws = torch.Generator | SliceOfGlobalBatch | None  # where a transform takes its random numbers


def _uniform(x: Tensor, low: float, high: float, generator: Draws) -> Tensor:
    """One U(low, high) per sample, shaped (N, 1, 1, 1) to broadcast over C, H, W."""
    if isinstance(generator, SliceOfGlobalBatch):
        u = generator.rand(x.shape[0], 1, 1, 1, dtype=x.dtype)
    else:
        device = generator.device if generator is not None else x.device
        u = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=device, dtype=x.dtype)
    return (low + (high - low) * u).to(x.device)


def _randint(x: Tensor, low: int, high: int, generator: Draws) -> Tensor:
    """One integer in [low, high) per sample, shaped (N,)."""
    if isinstance(generator, SliceOfGlobalBatch):
        return generator.randint(low, high, x.shape[0]).to(x.device)
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (x.shape[0],), generator=generator, device=device).to(x.device)


# -- the transforms (each: images (N, C, H, W) in, same shape out, differentiable in x) --------------


def brightness(x: Tensor, generator: Draws = None) -> Tensor:
    return x + _uniform(x, -0.5, 0.5, generator)


def saturation(x: Tensor, generator: Draws = None) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0, generator) + mean


def contrast(x: Tensor, generator: Draws = None) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5, generator) + mean


def translation(x: Tensor, generator: Draws = None, ratio: float = 0.125) -> Tensor:
    """Shift each image by its own (dy, dx), |d| ≤ ⌊size·ratio + ½⌋, filling with zeros."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(x, -max_dy, max_dy + 1, generator)
    dx = _randint(x, -max_dx, max_dx + 1, generator)
    # Output pixel (i, j) reads input (i − dy, j − dx); indices that fall outside read the zero border
    # of a 1-pixel padding (index 0 or size + 1 after the +1 offset for the padding).
    rows = (torch.arange(h, device=x.device).view(1, h) - dy.view(n, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) - dx.view(n, 1) + 1).clamp(0, w + 1)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indexing on (N, H+2, W+2, C): result (N, H, W, C) → back to (N, C, H, W). Gathering is
    # differentiable: each input pixel's gradient is the sum over the outputs that read it.
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: Draws = None, ratio: float = 0.5) -> Tensor:
    """Zero a square of side ⌊size·ratio + ½⌋ centred at a random pixel (clipped at the borders)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centres range over the image (one extra position for even sizes, as in the reference code).
    cy = _randint(x, 0, h + (1 - size_y % 2), generator)
    cx = _randint(x, 0, w + (1 - size_x % 2), generator)
    top, left = cy - size_y // 2, cx - size_x // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (ys >= top.view(n, 1, 1)) & (ys < (top + size_y).view(n, 1, 1))
        & (xs >= left.view(n, 1, 1)) & (xs < (left + size_x).view(n, 1, 1))
    )
    return x * (~inside).unsqueeze(1).to(x.dtype)


_TRANSFORMS: dict[str, tuple[Callable[..., Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def _check(policies: Sequence[str]) -> None:
    if isinstance(policies, str):
        raise TypeError("policies is a sequence of names, e.g. ('color', 'translation'), not a string")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation policies {unknown}; expected some of {POLICIES}")


def diff_augment(x: Tensor, policies: Sequence[str], *, generator: Draws = None) -> Tensor:
    """DiffAugment: every transform of every policy, in the order given, to every sample."""
    _check(policies)
    for policy in policies:
        for transform in _TRANSFORMS[policy]:
            x = transform(x, generator)
    return x


def augment_with_probability(
    x: Tensor,
    p: float,
    policies: Sequence[str],
    generator: Draws = None,
) -> Tensor:
    """ADA-style: each transform is applied to each sample independently with probability p.

    The transform is computed for the whole batch and kept only where a sample's coin came up, with
    `torch.where`, so unselected samples pass through bit-for-bit. p = 0 returns x itself.
    """
    _check(policies)
    if p <= 0.0:
        return x
    for policy in policies:
        for transform in _TRANSFORMS[policy]:
            chosen = _uniform(x, 0.0, 1.0, generator) < p  # (N, 1, 1, 1)
            x = torch.where(chosen, transform(x, generator), x)
    return x


class AdaController:
    """Adaptive augmentation probability p from the overfitting heuristic r_t = E[sign(D(real))].

    Every `interval` D steps:  p ← clamp(p + sign(r_t − target) · images / adjust_images, 0, 1)
    where `images` is the number of (global) images since the last update, so p can travel 0 → 1 in
    `adjust_images` images (stylegan2-ada: ada_kimg = 500), whatever the batch size or interval.
    e.g. batch 64 × interval 4 = 256 images per update: p moves by 256 / 500 000 = 0.000512 each time.

    Under DDP pass `all_reduce` (sums a tensor over ranks and returns the sum): the [Σ sign, count]
    pair is reduced before r_t is computed, so every rank derives the same r_t and holds the same p.
    """

    def __init__(self, target: float = 0.6, adjust_images: int = 500_000, interval: int = 4, p: float = 0.0):
        if adjust_images <= 0 or interval < 1:
            raise ValueError("adjust_images must be > 0 and interval >= 1")
        self.target = target
        self.adjust_images = adjust_images
        self.interval = interval
        self.p = float(p)
        self._sign_sum: Tensor | None = None  # kept on the logits' device: no host sync per step
        self._count = 0  # samples observed: a host number (it is known there), never a device copy
        self._device = torch.device("cpu")  # where the logits live; the collective runs there

    def is_due(self, step: int) -> bool:
        """Whether to call `update` after D step `step` (1-based count of completed D steps)."""
        return step % self.interval == 0

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """Accumulate sign(D(real)) from one D step."""
        self._device = real_logits.device
        signs = real_logits.detach().sign().double().sum()
        self._sign_sum = signs if self._sign_sum is None else self._sign_sum + signs
        self._count += real_logits.numel()

    @torch.no_grad()
    def update(
        self,
        batch_images_since_last: int,
        all_reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[float, float]:
        """Adjust p from the signs observed since the last update; returns (p, r_t).

        Every rank must call this at the same steps (it may run a collective). With no observation
        anywhere, p is left as it is and r_t is NaN.
        """
        sign_sum = self._sign_sum if self._sign_sum is not None else torch.zeros((), dtype=torch.float64, device=self._device)
        # The count joins the signs as a fill on their device (no host → device copy), once per interval.
        stats = torch.stack([sign_sum.to(self._device), torch.full((), float(self._count), dtype=torch.float64, device=self._device)])
        if all_reduce is not None:
            stats = all_reduce(stats)
        sign_sum, count = stats.tolist()
        self._sign_sum, self._count = None, 0
        if count == 0:
            return self.p, float("nan")
        r_t = sign_sum / count
        step = batch_images_since_last / self.adjust_images
        direction = (r_t > self.target) - (r_t < self.target)  # sign(r_t − target) ∈ {−1, 0, 1}
        self.p = min(max(self.p + direction * step, 0.0), 1.0)
        return self.p, r_t

    def state_dict(self) -> dict[str, Any]:
        """p, the same on every rank. The observations of a part-done interval differ per rank: they
        are in `rank_state`, which each rank saves and restores for itself."""
        return {"p": self.p}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = float(state["p"])
        self._sign_sum, self._count = None, 0

    def rank_state(self) -> dict[str, Any]:
        """This rank's observations since the last update (a host sync: call at checkpoints only)."""
        return {"sign_sum": None if self._sign_sum is None else float(self._sign_sum), "count": self._count}

    def load_rank_state(self, state: dict[str, Any], *, device: torch.device | str = "cpu") -> None:
        s = state["sign_sum"]
        self._device = torch.device(device)
        self._sign_sum = None if s is None else torch.tensor(s, dtype=torch.float64, device=device)
        self._count = int(state["count"])
