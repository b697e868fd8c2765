import numpy as np
import pytest
import torch

from pipeline.eval import reference
from pipeline.eval.reference import reference_stats


def test_computed_once_then_cached(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(40, 5, generator=torch.Generator().manual_seed(0))

    mu, sigma, feats = reference_stats(str(tmp_path), "k1", compute, n=40)
    assert (tmp_path / "k1" / "reference-40.npz").is_file()
    mu2, sigma2, feats2 = reference_stats(str(tmp_path), "k1", compute, n=40)
    assert len(calls) == 1
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    np.testing.assert_array_equal(feats, feats2)
    assert sigma.shape == (5, 5) and feats.shape == (40, 5)

    reference_stats(str(tmp_path), "k2", compute, n=40)  # another key is another entry
    assert len(calls) == 2


def test_wrong_count_is_refused_and_not_cached(tmp_path):
    with pytest.raises(ValueError):
        reference_stats(str(tmp_path), "k", lambda: torch.zeros(7, 3), n=8)
    assert not (tmp_path / "k" / "reference-8.npz").exists()


def test_kid_rows_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "MAX_KID_ROWS", 10)
    feats = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    mu, _, kid = reference_stats(str(tmp_path), "k", lambda: feats, n=50)
    assert kid.shape == (10, 3)
    np.testing.assert_allclose(mu, feats.double().mean(0).numpy())  # moments use every row
