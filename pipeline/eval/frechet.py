"""Fréchet distance and kernel inception distance between two sets of features.

Plain numpy in float64: scipy is not a dependency, and float32 loses the trace term for 2048-d
Inception features (the three traces are ~1e2-1e3 each and FD is their small difference).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = _as_f64(feats)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats needs (N>=2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    # Symmetric PSD square root by eigen-decomposition. Estimated covariances are PSD up to rounding
    # (and singular when N <= D or some feature is constant), so clamp tiny negative eigenvalues.
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + tr(s1) + tr(s2) - 2 tr((s1 s2)^½), the W2 distance between two Gaussians.

    s1 s2 is not symmetric, so its square root is awkward (scipy's sqrtm goes complex on it). But it
    is similar to the symmetric PSD matrix M = s1^½ s2 s1^½ (s1 s2 = s1^½ M s1^-½), so both have the
    same eigenvalues λ ≥ 0 and tr((s1 s2)^½) = Σ sqrt(λ(M)): one eigh, no complex numbers.
    """
    mu1, mu2 = _as_f64(mu1).ravel(), _as_f64(mu2).ravel()
    s1, s2 = np.atleast_2d(_as_f64(sigma1)), np.atleast_2d(_as_f64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(lam, 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    # Equal distributions give 0 up to rounding, which can land a hair below it.
    return float(max(fd, 0.0))


def kernel_inception_distance(f1, f2, *, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³ (Bińkowski et al. 2018).

    Averaged over `subsets` random subsets of m = min(subset_size, N1, N2) rows from each side
    (drawn without replacement), as stylegan2-ada does. Per subset:
        MMD² = [Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)] / (m(m-1)) - 2 Σ_{i,j} k(x_i,y_j) / m²
    Unbiased, so it can be slightly negative when the distributions match.
    """
    x_all, y_all = _as_f64(f1), _as_f64(f2)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"need (N, D) features with equal D, got {x_all.shape} and {y_all.shape}")
    d = x_all.shape[1]
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += within - 2.0 * kxy.sum() / (m * m)
    return float(total / subsets)
