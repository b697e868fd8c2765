"""Each loss against a hand computation on real = [2, -1], fake = [0.5, -3]."""

import math

import pytest
import torch

from pipeline.gan.losses import LOSSES, PAIRED, d_loss, g_loss

torch.set_num_threads(1)

REAL = torch.tensor([2.0, -1.0], dtype=torch.float64)
FAKE = torch.tensor([0.5, -3.0], dtype=torch.float64)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_nonsaturating_by_hand():
    expected_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    expected_g = (softplus(-0.5) + softplus(3.0)) / 2
    assert d_loss("nonsaturating", REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-12)
    assert g_loss("nonsaturating", FAKE).item() == pytest.approx(expected_g, rel=1e-12)


def test_wasserstein_by_hand():
    # mean(fake) - mean(real) = -1.25 - 0.5
    assert d_loss("wasserstein", REAL, FAKE).item() == pytest.approx(-1.75)
    assert g_loss("wasserstein", FAKE).item() == pytest.approx(1.25)


def test_hinge_by_hand():
    # real: relu(1-2)=0, relu(1+1)=2 -> 1.0 ; fake: relu(1+0.5)=1.5, relu(1-3)=0 -> 0.75
    assert d_loss("hinge", REAL, FAKE).item() == pytest.approx(1.75)
    assert g_loss("hinge", FAKE).item() == pytest.approx(1.25)


def test_least_squares_by_hand():
    # D: 0.5 * (mean(1², (-2)²) + mean(0.5², (-3)²)) = 0.5 * (2.5 + 4.625)
    assert d_loss("least_squares", REAL, FAKE).item() == pytest.approx(3.5625)
    # G: 0.5 * mean((-0.5)², (-4)²) = 0.5 * 8.125
    assert g_loss("least_squares", FAKE).item() == pytest.approx(4.0625)


def test_relativistic_by_hand():
    # Pairs (2, 0.5) and (-1, -3): D sees real - fake = 1.5, 2; G sees fake - real = -1.5, -2.
    assert d_loss("relativistic", REAL, FAKE).item() == pytest.approx((softplus(-1.5) + softplus(-2.0)) / 2, rel=1e-12)
    assert g_loss("relativistic", FAKE, REAL).item() == pytest.approx((softplus(1.5) + softplus(2.0)) / 2, rel=1e-12)


def test_relativistic_needs_pairs():
    with pytest.raises(ValueError, match="pairs reals with fakes"):
        d_loss("relativistic", REAL, FAKE[:1])
    with pytest.raises(ValueError, match="needs D's logits on the real batch"):
        g_loss("relativistic", FAKE)


@pytest.mark.parametrize("kind", [k for k in LOSSES if k not in PAIRED])
def test_losses_are_scalars_with_gradients_and_allow_uneven_batches(kind):
    real = torch.randn(3, 1, requires_grad=True)
    fake = torch.randn(5, 1, requires_grad=True)
    loss = d_loss(kind, real, fake) + g_loss(kind, fake)
    assert loss.shape == ()
    loss.backward()
    assert real.grad is not None and fake.grad is not None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        d_loss("logistic", REAL, FAKE)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        g_loss("logistic", FAKE)
