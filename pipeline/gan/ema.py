"""Exponential moving average of a model's weights (the "EMA generator" that gets sampled and shipped).

    ema ← β·ema + (1 − β)·model        for every parameter, after each optimizer step
    ema buffers ← model buffers        (batch-norm statistics, spectral-norm u/v: copied, not averaged)

β is either fixed (e.g. 0.999, as in BigGAN) or set by a half-life measured in *images*, as in
stylegan2-ada-pytorch (`ema_kimg`, `ema_rampup`):

    β = 0.5 ** (batch_size / half_life)

so after half_life images the old weights weigh ½ whatever the batch size: a step of B images decays
them by 0.5^(B/h), and h/B such steps by 0.5. e.g. h = 10 000 images, B = 64: β = 0.5^0.0064 ≈ 0.99557.
With `rampup` (0.05 in stylegan2-ada) the half-life starts short and grows with training,
half_life = min(half_life_images, images_seen · rampup), so the early, fast-moving weights are not
averaged with the random initialisation for thousands of steps.

`batch_size` is the *global* batch (images per step over all ranks): every rank then computes the same
β, and the half-life means images the whole job has seen. The averaged copy lives on every rank; all
ranks hold identical model weights after DDP's all-reduce, so their EMAs agree without communication.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def _unwrap(model: nn.Module) -> nn.Module:
    # Average the plain module, whose parameter names have no "module." prefix from DDP.
    return model.module if isinstance(model, DistributedDataParallel) else model


class EMA:
    """An eval-mode, gradient-free copy of `model` that trails it by an exponential moving average."""

    def __init__(
        self,
        model: nn.Module,
        *,
        beta: float | None = None,
        half_life_images: float | None = None,
        rampup: float | None = None,
    ) -> None:
        if (beta is None) == (half_life_images is None):
            raise ValueError("give exactly one of beta or half_life_images")
        if beta is not None and not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if half_life_images is not None and half_life_images < 0:
            raise ValueError(f"half_life_images must be >= 0, got {half_life_images}")
        if rampup is not None and (half_life_images is None or rampup < 0):
            raise ValueError("rampup needs half_life_images and must be >= 0")
        self.beta = beta
        self.half_life_images = half_life_images
        self.rampup = rampup
        self._module = copy.deepcopy(_unwrap(model)).eval().requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self._module

    def beta_at(self, *, step: int, batch_size: int) -> float:
        """β for an update after `step` steps of `batch_size` (global) images each."""
        if self.beta is not None:
            return self.beta
        half_life = self.half_life_images
        if self.rampup is not None:
            half_life = min(half_life, step * batch_size * self.rampup)
        # max(…, 1e-8): a zero half-life (step 0 under rampup) gives β = 0, a plain copy of the model.
        return 0.5 ** (batch_size / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, model: nn.Module, *, step: int, batch_size: int) -> float:
        """Move the average towards `model`; returns the β used."""
        beta = self.beta_at(step=step, batch_size=batch_size)
        source = _unwrap(model)
        # Pair tensors by name so a mismatch fails loudly instead of averaging the wrong weights.
        # named_parameters() also covers spectral norm's `parametrizations.weight.original`.
        params = dict(source.named_parameters())
        for name, p_ema in self._module.named_parameters():
            p_ema.lerp_(params[name].detach().to(p_ema.dtype), 1.0 - beta)
        buffers = dict(source.named_buffers())
        for name, b_ema in self._module.named_buffers():
            b_ema.copy_(buffers[name])
        return beta

    def state_dict(self) -> dict[str, Any]:
        """The averaged module's state dict: loadable straight into a fresh generator for sampling."""
        return self._module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._module.load_state_dict(state)
