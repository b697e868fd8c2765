"""One evaluation: n generated samples vs the real images in a pinned feature space, scored by FD and
KID (distribution distance), precision and recall (fidelity vs coverage, manifold.py) and the
memorization share (copies of training images, memorization.py)."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Sequence

import torch
from torch import Tensor

from .classwise import classwise_scores, draw_labels
from .config import EvalSpec, evaluator_key, extractor_key
from .extractors import load_extractor
from .frechet import feature_stats, frechet_distance, kernel_inception_distance
from .manifold import NHOOD_K, precision_recall
from .rules import MEMORIZATION_SAMPLES
from .memorization import MemorizationUndefined, heldout_mask, memorization_share, threshold, view_distance
from .reference import real_manifold, reference_stats

log = logging.getLogger(__name__)


def _leaves_global_rng(fn):
    """Run `fn` on a fork of the CPU's global RNG. Training evaluates between steps, and loading a
    cached extractor builds a module (initial weights drawn from the global RNG) where training one
    does not: without the fork, a run's dropout after its first eval would depend on the cache."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):  # z and the extractor live on the CPU until moved
            return fn(*args, **kwargs)

    return wrapper


@_leaves_global_rng
def evaluate(generator: Callable[[Tensor], Tensor], z_dim: int, real_images: Tensor,
             real_labels: Tensor | None, spec: EvalSpec, manifest_sha256: str, *, real_keys: Sequence[str],
             seed: int = 0, batch_size: int = 250, device: str | torch.device = "cpu",
             class_names: list[str] | None = None) -> dict:
    """{"fd", "kid", "precision", "recall", "memorization", "memorization_note", "num_samples",
    "num_real", "num_heldout", "extractor", "key"} for `generator` (z (B, z_dim) → images in [-1, 1]).

    `real_keys` are the real images' WebDataset keys: they decide the held-out split. memorization
    is None, and memorization_note says why, when the real data cannot calibrate it (memorization.py). `key` is the
    evaluator key (config.evaluator_key): compare scores only under equal keys and num_samples.
    Call it with the EMA generator in eval mode (the caller owns module state). z is drawn on the
    CPU from a seeded generator and then moved to `device`, so the same seed gives the same latents
    on any machine: successive evaluations of one run differ only by the generator's weights.

    `class_names` (one per class index) evaluates a class-conditional generator (z, labels) → images:
    labels are drawn from the reals' (seeded), and the result adds "accuracy" (the classifier's
    agreement with the asked-for class; None for the inception extractor, which has no such head)
    and "per_class" (classwise.py).
    """
    if len(real_keys) != len(real_images):
        raise ValueError(f"{len(real_keys)} keys for {len(real_images)} real images")
    extractor_dir = extractor_key(spec, manifest_sha256)  # the cache folder of everything real-side
    key = evaluator_key(spec, manifest_sha256, len(real_images))
    heldout = heldout_mask(real_keys, spec.heldout_fraction)
    extractor = load_extractor(spec, manifest_sha256, lambda: (real_images, real_labels), device=device)

    real_feats: list[Tensor] = []  # computed at most once, and only on a cache miss

    def compute_real() -> Tensor:
        if not real_feats:
            real_feats.append(extractor(real_images))
        return real_feats[0]

    mu_r, sigma_r, kid_r = reference_stats(spec.cache_dir, extractor_dir, compute_real, n=len(real_images))
    held_images = real_images[heldout]  # the memorization distance of a held-out image needs its views
    real = real_manifold(spec.cache_dir, extractor_dir, key, compute_real, heldout=heldout, k=NHOOD_K,
                         heldout_distance=lambda held, train: view_distance(held_images, extractor, train, identity=held))
    try:
        tau, note = threshold(real.heldout_nn, fraction=spec.heldout_fraction), None
    except MemorizationUndefined as e:
        tau, note = None, str(e)
        log.warning("memorization share not computed: %s", e)

    n = spec.num_samples
    rng = torch.Generator().manual_seed(seed)
    conditional = bool(class_names)
    if conditional and real_labels is None:
        raise ValueError("a class-conditional generator is evaluated against labelled real images")
    gen_labels = draw_labels(real_labels, n, torch.Generator().manual_seed(seed + 1)) if conditional else None
    feats, copy_dist = [], []
    # The memorization share looks at every view of the first MEMORIZATION_SAMPLES samples (26
    # extractor passes each, memorization.py), in the same batches: no image is kept.
    scored = min(n, MEMORIZATION_SAMPLES) if tau is not None else 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - start), z_dim, generator=rng, dtype=torch.float32)
            if conditional:
                images = generator(z.to(device), gen_labels[start : start + len(z)].to(device))
            else:
                images = generator(z.to(device))
            feats.append(extractor(images))
            if start < scored:
                m = min(len(z), scored - start)
                copy_dist.append(view_distance(images[:m], extractor, real.train_feats, identity=feats[-1][:m]))
    feats = torch.cat(feats)

    mu_g, sigma_g = feature_stats(feats)
    precision, recall = precision_recall(real.feats, feats, k=NHOOD_K, real_radii=real.radii)
    memorization = memorization_share(torch.cat(copy_dist), tau) if tau is not None else None
    result = {
        "fd": frechet_distance(mu_g, sigma_g, mu_r, sigma_r),
        "kid": kernel_inception_distance(feats, kid_r, seed=seed),
        "precision": precision,
        "recall": recall,
        "memorization": memorization,
        "memorization_note": note,
        "num_samples": n,
        "num_real": len(real_images),
        "num_heldout": int(heldout.sum()),
        "extractor": extractor.name,
        "key": key,
    }
    if conditional:
        predicted = extractor.classify(feats) if extractor.classify is not None else None
        # real.feats: every real image's features in read order, cached: a warm cache extracts no real image.
        result.update(classwise_scores(gen_feats=feats, gen_labels=gen_labels, real_feats=real.feats,
                                       real_labels=real_labels, predicted=predicted, class_names=class_names))
    return result
