"""Weight penalties by hand, gradient penalties against finite differences (float64), lazy Adam numbers."""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.gan.penalties import (
    l1_penalty,
    l2_penalty,
    lazy_adam,
    orthogonal_penalty,
    r1_penalty,
    r2_penalty,
    wgan_gp_penalty,
)

torch.set_num_threads(1)


def _set(param: torch.Tensor, values) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype).reshape(param.shape))


def tiny_module() -> nn.Module:
    """Conv weights [1, -2]; Linear [[3, -4], [0.5, 0]]; ConvTranspose [-1, 2]; huge biases and BN."""
    conv = nn.Conv2d(1, 2, 1)
    bn = nn.BatchNorm2d(2)
    lin = nn.Linear(2, 2)
    convt = nn.ConvTranspose2d(2, 1, 1)
    _set(conv.weight, [1.0, -2.0])
    _set(lin.weight, [[3.0, -4.0], [0.5, 0.0]])
    _set(convt.weight, [-1.0, 2.0])
    for b in (conv.bias, lin.bias, convt.bias, bn.bias, bn.weight):
        nn.init.constant_(b, 100.0)  # would dominate the sums if biases or BN were counted
    return nn.Sequential(conv, bn, lin, convt)


def test_l1_and_l2_sum_conv_linear_weights_only():
    m = tiny_module()
    assert l1_penalty(m).item() == pytest.approx(1 + 2 + 3 + 4 + 0.5 + 0 + 1 + 2)  # 13.5
    assert l2_penalty(m).item() == pytest.approx(1 + 4 + 9 + 16 + 0.25 + 0 + 1 + 4)  # 35.25


def test_weight_penalties_use_the_spectral_norm_original_and_carry_gradients():
    lin = nn.Linear(2, 2)
    _set(lin.weight, [[3.0, -4.0], [0.5, 0.0]])
    lin = spectral_norm(lin)
    original = lin.parametrizations.weight.original
    assert l1_penalty(lin).item() == pytest.approx(7.5)
    assert l2_penalty(lin).item() == pytest.approx(25.25)
    assert l1_penalty(lin).item() != pytest.approx(lin.weight.abs().sum().item())  # normalised W differs
    l2_penalty(lin).backward()
    torch.testing.assert_close(original.grad, 2 * original.detach())  # d/dW Σw² = 2W


def test_orthogonal_penalty_by_hand():
    lin = nn.Linear(2, 2, bias=False)
    _set(lin.weight, [[1.0, 2.0], [3.0, 4.0]])  # W Wᵀ = [[5, 11], [11, 25]] -> 2 * 11² = 242
    conv = nn.Conv2d(1, 2, 1)
    _set(conv.weight, [1.0, -2.0])  # rows [1], [-2]: off-diagonal -2 twice -> 8
    convt = nn.ConvTranspose2d(1, 2, 1)  # weight (in=1, out=2): rows per *output* channel: [1], [3] -> 18
    _set(convt.weight, [1.0, 3.0])
    bn = nn.BatchNorm1d(2)
    assert orthogonal_penalty(nn.ModuleList([lin, conv, convt, bn])).item() == pytest.approx(268.0)
    # Orthogonal rows of any norm cost nothing.
    _set(lin.weight, [[3.0, 0.0], [0.0, -7.0]])
    assert orthogonal_penalty(lin).item() == 0.0


def tiny_d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).double()


def finite_difference_input_gradient(d: nn.Module, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of each sample's logit with respect to each of its own pixels."""
    grad = torch.zeros_like(x)
    with torch.no_grad():
        flat = x.reshape(x.shape[0], -1)
        for j in range(flat.shape[1]):
            plus, minus = flat.clone(), flat.clone()
            plus[:, j] += h
            minus[:, j] -= h
            diff = d(plus.reshape(x.shape)) - d(minus.reshape(x.shape))
            grad.reshape(x.shape[0], -1)[:, j] = diff[:, 0] / (2 * h)
    return grad


@pytest.mark.parametrize("penalty", [r1_penalty, r2_penalty])
def test_r1_r2_match_finite_differences(penalty):
    d = tiny_d()
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    value, logits = penalty(d, x)
    g = finite_difference_input_gradient(d, x)
    expected = g.square().flatten(1).sum(1).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-7)
    torch.testing.assert_close(logits, d(x))


def test_wgan_gp_matches_finite_differences_at_the_same_interpolates():
    d = tiny_d()
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=gen)
    fake = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=gen)
    value, logits = wgan_gp_penalty(d, real, fake, generator=torch.Generator().manual_seed(3))
    eps = torch.rand(4, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mixed = eps * real + (1 - eps) * fake
    norms = finite_difference_input_gradient(d, mixed).flatten(1).norm(dim=1)
    assert value.item() == pytest.approx((norms - 1).square().mean().item(), rel=1e-7)
    torch.testing.assert_close(logits, d(mixed))


def test_gradient_penalty_skips_the_last_bias_unless_logits_times_zero_is_added():
    # The reason callers add `logits * 0` under DDP: without it the last bias gets no gradient.
    d = tiny_d()
    value, logits = r1_penalty(d, torch.randn(2, 1, 3, 3, dtype=torch.float64))
    params = list(d.parameters())
    alone = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    assert alone[-1] is None and all(g is not None for g in alone[:-1])
    together = torch.autograd.grad(value + (logits * 0).sum(), params)
    assert all(g is not None for g in together)
    assert together[-1].abs().sum().item() == 0.0


def test_lazy_adam_numbers():
    lr, betas = lazy_adam(0.0025, (0.0, 0.99), every=16)  # c = 16/17
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert betas[1] == pytest.approx(0.990585, abs=1e-6)
    lr, betas = lazy_adam(0.002, (0.5, 0.9), every=4)  # c = 0.8
    assert lr == pytest.approx(0.0016)
    assert betas == pytest.approx((0.5**0.8, 0.9**0.8))
    assert lazy_adam(0.002, (0.5, 0.9), every=1) == (0.002, (0.5, 0.9))
    with pytest.raises(ValueError):
        lazy_adam(0.002, (0.5, 0.9), every=0)


def test_zero_centered_penalties_from_one_pass_equal_r1_and_r2_by_hand():
    """R1 and R2 taken from one D pass over [reals, fakes] (what GanStep does when they run every step)
    equal the separate penalties, and for a linear critic D(x) = w·x + b both are ‖w‖² (every sample's
    gradient is w)."""
    from pipeline.gan.penalties import r1_penalty, r2_penalty, zero_centered_penalties

    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 1)
    d = lambda x: linear(x.flatten(1))  # noqa: E731
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    real_in, fake_in = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    r1, r2 = zero_centered_penalties(d(torch.cat([real_in, fake_in])), [real_in, fake_in])
    w2 = linear.weight.detach().square().sum()
    assert torch.allclose(r1, w2) and torch.allclose(r2, w2)

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 2), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4, 1))
    real_in, fake_in = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    r1, r2 = zero_centered_penalties(conv(torch.cat([real_in, fake_in])), [real_in, fake_in])
    assert torch.allclose(r1, r1_penalty(conv, real)[0]) and torch.allclose(r2, r2_penalty(conv, fake)[0])
    assert not torch.allclose(r1, r2)  # a non-linear D: the two penalties are not the same number
