"""k-NN manifold precision/recall, nearest-neighbour distances and the held-out split, on synthetic
features where the right answer is known."""
import pytest
import torch

from pipeline.eval import manifold
from pipeline.eval.config import EvalSpec, evaluator_key
from pipeline.eval.manifold import knn_radii, nn_distance, precision_recall
from pipeline.eval.memorization import (MIN_HELDOUT, MemorizationUndefined, heldout_mask, is_heldout,
                                       memorization_share, threshold)


def _gauss(n, d=8, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_knn_radii_and_nn_distance_match_brute_force(monkeypatch):
    monkeypatch.setattr(manifold, "CHUNK_ELEMENTS", 7 * 40)  # force several uneven row chunks
    x, y = _gauss(40), _gauss(25, seed=1)
    full = torch.cdist(x.double(), x.double())
    want = full.sort(dim=1).values[:, 3]  # column 0 is the point itself
    torch.testing.assert_close(knn_radii(x, 3).double(), want, atol=1e-4, rtol=0)
    torch.testing.assert_close(nn_distance(y, x).double(), torch.cdist(y.double(), x.double()).min(1).values,
                               atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="more than k=3"):
        knn_radii(x[:3], 3)


def test_same_distribution_scores_high_precision_and_recall():
    p, r = precision_recall(_gauss(600), _gauss(600, seed=1))
    assert p > 0.8 and r > 0.8


def test_far_away_samples_have_zero_precision_and_recall():
    assert precision_recall(_gauss(300), _gauss(300, seed=1, shift=20.0)) == (0.0, 0.0)


def test_collapse_keeps_precision_and_loses_recall():
    real = _gauss(600)
    collapsed = real[:1].repeat(600, 1)  # one real point, 600 times
    p, r = precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.02


def test_blurry_samples_lose_precision_not_recall():
    # "Diverse but blurry": every real point plus wide noise covers the data (recall) while most
    # samples leave the real manifold (precision).
    real = _gauss(600)
    noisy = real + 1.5 * _gauss(600, seed=2)
    p, r = precision_recall(real, noisy)
    p_clean, _ = precision_recall(real, _gauss(600, seed=1))
    assert p < 0.5 * p_clean and r > 0.5


def test_heldout_split_is_a_deterministic_hash_of_the_key():
    keys = [f"{i:08d}" for i in range(2000)]
    mask = heldout_mask(keys, 0.1)
    assert torch.equal(mask, heldout_mask(list(reversed(keys)), 0.1).flip(0))  # order does not matter
    assert 0.07 < mask.float().mean() < 0.13
    assert mask[:500].sum() == heldout_mask(keys[:500], 0.1).sum()  # reading fewer images keeps membership
    assert all(is_heldout(k, 0.2) for k, m in zip(keys, mask) if m)  # a larger fraction is a superset


def test_threshold_is_the_low_quantile_and_refuses_what_cannot_place_it():
    heldout_nn = torch.arange(1, 101, dtype=torch.float32)  # 1..100
    tau = threshold(heldout_nn, fraction=0.1)
    assert tau == pytest.approx(5.95)  # numpy's linear 5% quantile of 1..100
    assert memorization_share(torch.tensor([0.0, 5.0, 5.95, 50.0]), tau) == 0.5  # strictly closer only
    with pytest.raises(MemorizationUndefined, match="exact duplicates"):
        threshold(torch.cat([torch.zeros(10), heldout_nn]), fraction=0.1)
    with pytest.raises(MemorizationUndefined, match=f"heldout_fraction=0.1 gives 19 .* at least {MIN_HELDOUT}"):
        threshold(heldout_nn[:MIN_HELDOUT - 1], fraction=0.1)


def test_evaluator_key_pins_the_split_and_the_real_set():
    base = evaluator_key(EvalSpec(), "m1", 1797)
    assert base == evaluator_key(EvalSpec(num_samples=10, cache_dir="/elsewhere"), "m1", 1797)
    assert base != evaluator_key(EvalSpec(heldout_fraction=0.2), "m1", 1797)
    assert base != evaluator_key(EvalSpec(), "m1", 1000)
    assert base != evaluator_key(EvalSpec(), "m2", 1797)
    assert base != evaluator_key(EvalSpec(classifier_steps=10), "m1", 1797)
    with pytest.raises(ValueError, match="heldout_fraction"):
        EvalSpec(heldout_fraction=0.9)
    with pytest.raises(ValueError, match="num_samples"):
        EvalSpec(num_samples=3)  # recall's k-NN radii need k + 1 = 4 samples
