import pytest
import torch
from torch import nn

from pipeline.gan.models import DCGANDiscriminator, DCGANGenerator, build_models


@pytest.mark.parametrize("resolution", [32, 64])
def test_generator_and_discriminator_shapes(resolution):
    G = DCGANGenerator(z_dim=100, width=16, resolution=resolution)
    D = DCGANDiscriminator(width=16, resolution=resolution)
    x = G(torch.randn(3, 100))
    assert x.shape == (3, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh
    assert D(x).shape == (3, 1)


def test_seed_layout_at_32():
    """The tutorial's DCGAN: dense to 8·8·256 without bias, ConvT 256→128 (s1), 128→64 (s2), 64→3 (s2);
    D: conv 3→64 (s2), 64→128 (s2), dense 8·8·128 → 1."""
    G = DCGANGenerator(z_dim=100, width=64, resolution=32)
    assert G.dense.in_features == 100 and G.dense.out_features == 8 * 8 * 256 and G.dense.bias is None
    convs = [m for m in G.convs if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == [
        (256, 128, 1, 5), (128, 64, 2, 5), (64, 3, 2, 5)
    ]
    D = DCGANDiscriminator(width=64, resolution=32)
    convs = [m for m in D.convs if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [(3, 64, 2), (64, 128, 2)]
    assert D.head.in_features == 8 * 8 * 128
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in D.convs)


def test_no_norm_variant_has_no_batchnorm():
    G, D = build_models(kind="dcgan", z_dim=8, g_width=4, d_width=4, resolution=16, g_norm="none", d_dropout=0.0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert G(torch.randn(2, 8)).shape == (2, 3, 16, 16)


def test_bad_resolution_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(resolution=48)
