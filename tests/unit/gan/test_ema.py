"""EMA: hand-computed lerps, copied buffers, the half-life formula and its ramp-up."""

import pytest
import torch
from torch import nn

from pipeline.gan.ema import EMA

torch.set_num_threads(1)


def _model() -> nn.Module:
    m = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[0].bias.fill_(0.0)
    return m


def test_fixed_beta_lerps_parameters_and_copies_buffers():
    model = _model()
    ema = EMA(model, beta=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(5.0)
    assert ema.update(model, step=1, batch_size=8) == 0.9
    assert ema.module[0].weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)  # 1.2
    assert ema.module[1].running_mean.item() == 5.0  # copied, not averaged
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
    ema.update(model, step=2, batch_size=8)
    assert ema.module[0].weight.item() == pytest.approx(0.9 * 1.2 + 0.1 * -1.0)  # 0.98
    assert model[0].weight.item() == -1.0  # the model itself is untouched


def test_half_life_formula():
    ema = EMA(_model(), half_life_images=10_000)
    # B = 64 images decay the old weights by 0.5^(64/10000) ≈ 0.995574
    assert ema.beta_at(step=7, batch_size=64) == pytest.approx(0.5 ** (64 / 10_000))
    assert ema.beta_at(step=7, batch_size=64) == pytest.approx(0.995574, abs=1e-6)


def test_rampup_shortens_the_half_life_early():
    ema = EMA(_model(), half_life_images=10_000, rampup=0.05)
    # step 100 × 64 images × 0.05 = 320-image half-life: β = 0.5^(64/320) = 0.5^0.2
    assert ema.beta_at(step=100, batch_size=64) == pytest.approx(0.5**0.2)
    # after 10 000 / 0.05 = 200 000 images the full half-life applies
    assert ema.beta_at(step=10_000, batch_size=64) == pytest.approx(0.5 ** (64 / 10_000))
    # step 0: zero half-life, β = 0: the average becomes a copy of the model
    model = _model()
    with torch.no_grad():
        model[0].weight.fill_(4.0)
    assert ema.update(model, step=0, batch_size=64) == 0.0
    assert ema.module[0].weight.item() == 4.0


def test_state_dict_round_trip():
    model = _model()
    ema = EMA(model, beta=0.5)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ema.update(model, step=1, batch_size=1)
    other = EMA(_model(), beta=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.module[0].weight.item() == pytest.approx(2.0)


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        EMA(_model())
    with pytest.raises(ValueError):
        EMA(_model(), beta=0.9, half_life_images=100)
    with pytest.raises(ValueError):
        EMA(_model(), beta=0.9, rampup=0.05)
