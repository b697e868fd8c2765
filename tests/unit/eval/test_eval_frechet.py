import numpy as np
import pytest
import torch

from pipeline.eval.frechet import feature_stats, frechet_distance, kernel_inception_distance


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_gaussians_have_zero_distance():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(32), _random_cov(rng, 32)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_covariances_match_hand_computation():
    # Diagonal: tr((s1 s2)^½) = Σ sqrt(a_i b_i), so FD = |Δmu|² + Σ (sqrt(a_i) - sqrt(b_i))².
    # Δmu = (1, 2) → 5;  (sqrt1 - sqrt9)² + (sqrt4 - sqrt1)² = 4 + 1 = 5;  FD = 10.
    fd = frechet_distance(np.array([0.0, 1.0]), np.diag([1.0, 4.0]), np.array([1.0, 3.0]), np.diag([9.0, 1.0]))
    assert fd == pytest.approx(10.0, rel=1e-12)


def test_symmetric_in_its_arguments():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(20), _random_cov(rng, 20))
    b = (rng.standard_normal(20) + 0.5, _random_cov(rng, 20) * 3)
    ab, ba = frechet_distance(*a, *b), frechet_distance(*b, *a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-9)


def test_matches_scipy_sqrtm_for_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    s1, s2 = _random_cov(rng, 12), _random_cov(rng, 12)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_singular_covariances_stay_finite():
    # Fewer samples than dimensions: rank-deficient covariances, as with a short eval on 2048-d features.
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((10, 64)), rng.standard_normal((10, 64))
    fd = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert np.isfinite(fd) and fd > 0


def test_feature_stats_accepts_tensors_and_matches_numpy():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_stats(x)
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-12)


def test_kid_equals_naive_unbiased_mmd():
    # With subset_size = N the subsets are permutations of all rows, so one subset is the full estimate.
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    m = 6
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    naive = (kxx + kyy) / (m * (m - 1)) - 2 * kxy / m**2
    assert kernel_inception_distance(x, y, subsets=1, subset_size=m) == pytest.approx(naive, rel=1e-10)


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same = kernel_inception_distance(a, b, subset_size=300)
    shifted = kernel_inception_distance(a, b + 0.5, subset_size=300)
    assert abs(same) < 0.01
    assert shifted > 0.5 and shifted > 50 * abs(same)
    assert kernel_inception_distance(a, b, subset_size=300) == same  # seeded
