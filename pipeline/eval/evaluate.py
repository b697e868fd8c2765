"""One evaluation: n generated samples vs the real images, scored by FD and KID in a pinned feature space."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .config import EvalSpec, extractor_key
from .extractors import load_extractor
from .frechet import feature_stats, frechet_distance, kernel_inception_distance
from .reference import reference_stats


def evaluate(generator: Callable[[Tensor], Tensor], z_dim: int, real_images: Tensor,
             real_labels: Tensor | None, spec: EvalSpec, manifest_sha256: str, *, seed: int = 0,
             batch_size: int = 250, device: str | torch.device = "cpu") -> dict:
    """{"fd", "kid", "num_samples", "extractor", "key"} for `generator` (z (B, z_dim) → images in [-1, 1]).

    Call it with the EMA generator in eval mode (the caller owns module state). z is drawn on the
    CPU from a seeded generator and then moved to `device`, so the same seed gives the same latents
    on any machine: successive evaluations of one run differ only by the generator's weights.
    """
    key = extractor_key(spec, manifest_sha256)
    extractor = load_extractor(spec, manifest_sha256, lambda: (real_images, real_labels), device=device)
    mu_r, sigma_r, kid_r = reference_stats(spec.cache_dir, key, lambda: extractor(real_images),
                                           n=len(real_images))

    n = spec.num_samples
    rng = torch.Generator().manual_seed(seed)
    feats = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - start), z_dim, generator=rng, dtype=torch.float32)
            feats.append(extractor(generator(z.to(device))))
    feats = torch.cat(feats)

    mu_g, sigma_g = feature_stats(feats)
    return {
        "fd": frechet_distance(mu_g, sigma_g, mu_r, sigma_r),
        "kid": kernel_inception_distance(feats, kid_r, seed=seed),
        "num_samples": n,
        "extractor": extractor.name,
        "key": key,
    }
