"""SNGAN ResNet G and D: shapes at 32 and 64, block counts, and spectral norm + R1 working through them."""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.gan.penalties import r1_penalty
from pipeline.gan.resnet import ResNetDiscriminator, ResNetGenerator

torch.set_num_threads(1)


@pytest.mark.parametrize("resolution, up_blocks, d_blocks", [(32, 3, 4), (64, 4, 5)])
def test_shapes(resolution, up_blocks, d_blocks):
    torch.manual_seed(0)
    g = ResNetGenerator(z_dim=16, width=8, resolution=resolution, norm="batch")
    d = ResNetDiscriminator(width=8, resolution=resolution)
    images = g(torch.randn(2, 16))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1.0
    assert d(images).shape == (2, 1)
    assert len(g.blocks) == up_blocks  # log2(R / 4) doublings from 4×4
    assert len(d.blocks) == d_blocks  # log2(R / 8) downsamplings to 8×8, then two more blocks


def test_norm_none_has_no_batch_norm_and_bad_arguments_are_refused():
    g = ResNetGenerator(z_dim=4, width=4, resolution=32, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    with pytest.raises(ValueError):
        ResNetGenerator(resolution=48)
    with pytest.raises(ValueError):
        ResNetDiscriminator(resolution=8)
    with pytest.raises(ValueError):
        ResNetGenerator(norm="layer")


def test_discriminator_takes_spectral_norm_and_a_double_backward():
    torch.manual_seed(0)
    d = ResNetDiscriminator(width=4, resolution=32)
    for m in list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spectral_norm(m)
    x = torch.randn(2, 3, 32, 32)
    penalty, logits = r1_penalty(d, x)
    (penalty + (logits * 0).sum()).backward()
    assert all(p.grad is not None for p in d.parameters())
    # Samples are scored independently (no batch statistics in D), which the R1 sum trick relies on.
    d.eval()
    torch.testing.assert_close(d(x)[:1], d(x[:1]))
