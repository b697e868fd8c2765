"""Precision and recall of generated vs real features: the k-NN manifold estimate of Kynkäänniemi et
al. 2019 ("Improved Precision and Recall Metric for Assessing Generative Models"), as stylegan2-ada's
pr50k3 computes it, here in the evaluation's own feature space.

A set of features F is approximated by the union of balls B(f, r_k(f)), f ∈ F, where r_k(f) is the
distance from f to its k-th nearest neighbour in F (itself excluded). Then
    precision = share of generated features inside the real manifold   (are samples realistic?)
    recall    = share of real features inside the generated manifold   (is the data covered?)
with k = 3 (the paper's and stylegan2-ada's setting). "Sharp but collapsed" shows as high precision
and low recall (a few real-looking modes: tiny balls around the samples cover little real data);
"diverse but blurry" as low precision. Both are biased by the set sizes, so compare scores only under
one evaluator key and one num_samples (as for FD).

Distances are Euclidean in float32, computed in row chunks so that a 10k x 10k problem never holds
more than CHUNK_ELEMENTS distances at once.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rules import NHOOD_K

CHUNK_ELEMENTS = 1 << 24  # distances per chunk: 64 MiB of float32


def _rows_per_chunk(cols: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(cols, 1))


def _dist(a: Tensor, b: Tensor) -> Tensor:
    # cdist's matmul path (|a|² + |b|² - 2ab) is ~10x faster than the direct one on CPU; its
    # rounding (~1e-3 on unit-scale 128-d features) is far below any neighbour distance that matters.
    return torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist")


def knn_radii(feats: Tensor, k: int = NHOOD_K) -> Tensor:
    """(N,) distance from each row to its k-th nearest other row (the row itself is the 0th)."""
    feats = feats.float()
    if len(feats) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(feats)}")
    out = []
    for chunk in feats.split(_rows_per_chunk(len(feats))):
        # kthvalue(k + 1): the smallest distance in each row is the point to itself.
        out.append(_dist(chunk, feats).kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def inside_share(probes: Tensor, manifold: Tensor, radii: Tensor) -> float:
    """Share of `probes` rows within radii[j] of some manifold row j (closed balls, as in the paper)."""
    probes, manifold = probes.float(), manifold.float()
    hits = [(_dist(chunk, manifold) <= radii).any(dim=1) for chunk in probes.split(_rows_per_chunk(len(manifold)))]
    return float(torch.cat(hits).float().mean())


def nn_distance(probes: Tensor, reference: Tensor) -> Tensor:
    """(P,) distance from each probe row to its nearest reference row."""
    probes, reference = probes.float(), reference.float()
    return torch.cat([_dist(chunk, reference).min(dim=1).values
                      for chunk in probes.split(_rows_per_chunk(len(reference)))])


def precision_recall(real: Tensor, generated: Tensor, *, k: int = NHOOD_K,
                     real_radii: Tensor | None = None) -> tuple[float, float]:
    """(precision, recall) of `generated` (M, D) against `real` (N, D) features.

    `real_radii` (knn_radii(real, k)) may be passed in: it depends on the real set only, so
    evaluate() caches it beside the reference statistics.
    """
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"need (N, D) features with equal D, got {tuple(real.shape)} and {tuple(generated.shape)}")
    if real_radii is None:
        real_radii = knn_radii(real, k)
    precision = inside_share(generated, real, real_radii)
    recall = inside_share(real, generated, knn_radii(generated, k))
    return precision, recall
