"""R3GAN's networks: shapes at every resolution, parameter counts of the presets (the paper's CIFAR-10
network is about 21 M parameters each), the fix-up start (every block the identity), and the range
promise of the generator once it leaves training."""
import pytest
import torch

from pipeline.gan.models import build_models
from pipeline.gan.r3gan import PRESETS, R3GANDiscriminator, R3GANGenerator, ResidualBlock, widths_for

torch.set_num_threads(1)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_presets_build_at_every_resolution_they_reach(preset, resolution):
    reach = 4 << (len(PRESETS[preset]) - 1)
    if resolution > reach:
        with pytest.raises(ValueError, match=f"resolution {resolution} needs"):
            widths_for(resolution, preset=preset)
        return
    widths = widths_for(resolution, preset=preset)
    G = R3GANGenerator(z_dim=64, widths=widths, num_classes=10)
    D = R3GANDiscriminator(widths=widths, num_classes=10)
    assert G.resolution == resolution and len(widths) == resolution.bit_length() - 2
    # Two blocks a stage, each C·2C + 2C·16·9 + 2C·C weights and 2·2C activation biases.
    blocks = sum(2 * (4 * w * w + 2 * w * 16 * 9 + 4 * w) for w in widths)
    assert blocks < _count(G) < 1.02 * blocks + 1e6 and blocks < _count(D) < 1.02 * blocks + 1e6


def test_the_cifar10_preset_is_the_papers_network():
    G, D = build_models(kind="r3gan", z_dim=64, g_width=0, d_width=0, resolution=32, g_norm="none", d_dropout=0,
                        num_classes=10, preset="cifar10")
    assert 20.5e6 < _count(G) < 21.5e6 and 20.5e6 < _count(D) < 21.5e6  # "about 21 M" (R3GAN, Table 6)
    assert all(m.grouped.groups == 2 * 768 // 16 for m in G.modules() if isinstance(m, ResidualBlock))


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shapes_and_range(resolution):
    widths = (16, 16, 8, 8, 8)[: resolution.bit_length() - 2]
    G = R3GANGenerator(z_dim=8, widths=widths, blocks_per_stage=1)
    D = R3GANDiscriminator(widths=widths, blocks_per_stage=1)
    z = torch.randn(3, 8)
    x = G(z)
    assert x.shape == (3, 3, resolution, resolution)
    assert D(x).shape == (3, 1)
    G.eval()
    out = G(z * 50)
    assert out.min() >= -1 and out.max() <= 1, "what leaves training is in [-1, 1]"


def test_blocks_start_as_the_identity():
    block = ResidualBlock(16, total_blocks=8)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x)
    assert block.reduce.weight.abs().max() == 0 and block.expand.weight.abs().max() > 0


def test_lowpass_resampling_keeps_a_constant_image_constant():
    G = R3GANGenerator(z_dim=4, widths=(16, 16))
    up = G.stages[1][0]
    x = torch.ones(1, 16, 4, 4)
    y = up(x)
    assert y.shape == (1, 16, 8, 8)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.ones(1, 16, 6, 6))  # interior: the mean is kept (gain 4)


def test_bad_widths_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="model.widths gives 2 widths"):
        widths_for(32, widths=(16, 16))
    with pytest.raises(ValueError, match="multiple of 16 channels per group"):
        widths_for(8, widths=(12, 12))


def test_exports_with_a_dynamic_batch():
    """The registry exports G with torch.export: nothing in forward may pin the batch size."""
    from pipeline.tracking.registry import ClassConditionedInput

    G = ClassConditionedInput(R3GANGenerator(z_dim=8, widths=(16, 8), blocks_per_stage=1, num_classes=3), 8).eval()
    example = torch.cat([torch.randn(2, 8), torch.tensor([[0.0], [2.0]])], 1)
    program = torch.export.export(G, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    five = torch.cat([torch.randn(5, 8), torch.tensor([[0.0], [1.0], [2.0], [1.0], [0.0]])], 1)
    assert torch.allclose(program.module()(five), G(five))
