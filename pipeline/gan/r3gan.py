"""R3GAN's ResNeXt-style generator and discriminator (Huang et al., "The GAN is dead; long live the GAN!
A Modern GAN Baseline", NeurIPS 2024; brownvc/R3GAN, R3GAN/Networks.py), written for this project.

`widths[i]` is the channel count at resolution 4·2^i: widths = (768, 768, 768, 768) is the paper's
CIFAR-10 network at 32 px (≈21 M parameters each for G and D).

Generator, R = 32:
    [z, embed(y)] ─Linear─▶ scales × learned 4×4 basis ─2 blocks─▶ 4×4
      ─transition─▶ 8×8 ─2 blocks─▶ ─transition─▶ 16×16 ─2 blocks─▶ ─transition─▶ 32×32 ─2 blocks─▶ ─1×1 conv─▶ RGB
  transition: 1×1 conv (where the width changes), then ×2 bilinear upsampling through the low-pass
  filter [1, 3, 3, 1]⊗[1, 3, 3, 1]/16 (a transposed depthwise conv, gain 4 keeps the mean).
Discriminator, the mirror: 1×1 conv from RGB, per resolution 2 blocks then a transition (the same
  low-pass filter, stride 2, then a 1×1 conv), at 4×4 2 blocks, a 4×4 depthwise conv to a vector φ and
  a linear head; a conditional D adds ⟨embed(y), φ⟩ (a projection discriminator, gan/conditioning.py).
Residual block: x + conv1×1(act(gconv3×3(act(conv1×1(x))))), widths C → 2C → 2C → C, the 3×3 grouped
  16 channels a group, act = bias + LeakyReLU(0.2); no normalization anywhere, so nothing couples the
  samples of a batch (or the ranks of a DDP group) but the gradients.

Initialisation (fix-up style, the paper's §4): every conv and linear weight is N(0, gain²/fan_in) (MSR);
the inner convs of a block get gain √2/√(1 + 0.2²) (LeakyReLU's) times L^(−1/4), with L the block count
of the network, and the last conv of a block starts at zero: every block starts as the identity, and
the variance the blocks add as they learn is scaled down with their number (L^(−1/(2·3−2)) for three
layers per block), so deep networks start as stable as shallow ones.

G's output is not squashed (no tanh, as in the paper: a tanh saturates and a clamp zeroes the gradient
of out-of-range pixels); in eval mode (the EMA copy, samples, the registered model) it is clamped to
[−1, 1], the range every generator of this project promises.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.gan.conditioning import ClassInput, ClassProjection, project

START = 4
GROUP_CHANNELS = 16  # channels per group of the 3×3 grouped conv
EXPANSION = 2        # a block's inner width, in multiples of its width
LEAKY = 0.2
ACT_GAIN = math.sqrt(2 / (1 + LEAKY**2))

# Channels per resolution, 4 px upwards; a job takes the first log2(R/4) + 1.
PRESETS: dict[str, tuple[int, ...]] = {
    "cifar10": (768, 768, 768, 768),                 # the paper's CIFAR-10 network, 32 px
    "ffhq": (768, 768, 768, 768, 384, 192, 96),      # the paper's FFHQ-64 (first five) and FFHQ-256
    "narrow": (128, 64, 32, 16, 16, 16, 16),         # for 2 CPU cores, with blocks_per_stage 1 (jobs/r3gan-cifar10.yaml)
}


def widths_for(resolution: int, *, preset: str | None = None, widths: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The channel count at each resolution from 4 px to `resolution`; ValueError naming what is wrong."""
    stages = math.log2(resolution / START) if resolution > 0 else -1
    if resolution < 2 * START or stages != int(stages):
        raise ValueError(f"resolution must be a power of two >= {2 * START}, got {resolution}")
    needed = int(stages) + 1
    chosen = widths if widths is not None else PRESETS[preset]
    if len(chosen) < needed:
        source = "model.widths" if widths is not None else f"model.preset {preset}"
        raise ValueError(f"{source} gives {len(chosen)} widths (4 to {START << (len(chosen) - 1)} px);"
                         f" resolution {resolution} needs {needed}")
    for w in chosen[:needed]:
        if (EXPANSION * w) % GROUP_CHANNELS:
            raise ValueError(f"model.widths: {w} × {EXPANSION} is not a multiple of {GROUP_CHANNELS} channels per group")
    return tuple(chosen[:needed])


def _msr(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    return layer


def _conv(c_in: int, c_out: int, kernel: int, *, gain: float = 1.0, groups: int = 1) -> nn.Conv2d:
    return _msr(nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, groups=groups, bias=False), gain)


class BiasedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), LEAKY)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, *, total_blocks: int):
        super().__init__()
        inner = EXPANSION * channels
        gain = ACT_GAIN * total_blocks ** (-1 / 4)
        self.expand = _conv(channels, inner, 1, gain=gain)
        self.act1 = BiasedLeakyReLU(inner)
        self.grouped = _conv(inner, inner, 3, gain=gain, groups=inner // GROUP_CHANNELS)
        self.act2 = BiasedLeakyReLU(inner)
        self.reduce = _conv(inner, channels, 1, gain=0.0)  # zero: the block starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        return x + self.reduce(self.act2(self.grouped(self.act1(self.expand(x)))))


def _lowpass() -> Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])  # [1, 2, 1] convolved with the box [1, 1]: bilinear ×2
    k = torch.outer(k, k)
    return k / k.sum()


class Upsample(nn.Module):
    """1×1 conv where the width changes, then ×2 through the low-pass filter."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = _conv(c_in, c_out, 1) if c_in != c_out else None
        self.register_buffer("kernel", 4 * _lowpass(), persistent=False)  # ×4: zero-stuffing keeps ¼ of the mass

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x) if self.conv is not None else x
        c = x.shape[1]
        k = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


class Downsample(nn.Module):
    """÷2 through the low-pass filter, then a 1×1 conv where the width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = _conv(c_in, c_out, 1) if c_in != c_out else None
        self.register_buffer("kernel", _lowpass(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)
        return self.conv(x) if self.conv is not None else x


class R3GANGenerator(nn.Module):
    """(N, z_dim) z and (N,) int64 labels (conditional) → (N, 3, R, R)."""

    def __init__(self, *, z_dim: int = 64, widths: tuple[int, ...], blocks_per_stage: int = 2, num_classes: int = 0,
                 embed_dim: int | None = None):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.resolution = START << (len(widths) - 1)
        total = blocks_per_stage * len(widths)
        self.class_input = ClassInput(num_classes, embed_dim or z_dim)  # the paper: embed_dim = z_dim
        self.basis = nn.Parameter(torch.randn(widths[0], START, START))
        self.basis_scale = _msr(nn.Linear(z_dim + self.class_input.embed_dim, widths[0], bias=False))
        stages = []
        for i, w in enumerate(widths):
            layers = [] if i == 0 else [Upsample(widths[i - 1], w)]
            layers += [ResidualBlock(w, total_blocks=total) for _ in range(blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.to_rgb = _conv(widths[-1], 3, 1)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.class_input(z, labels)
        x = self.basis.to(h.dtype).unsqueeze(0) * self.basis_scale(h)[:, :, None, None]  # no len(): export keeps N dynamic
        x = self.to_rgb(self.stages(x))
        return x if self.training else x.clamp(-1, 1)


class R3GANDiscriminator(nn.Module):
    """(N, 3, R, R) images and (N,) int64 labels (conditional) → (N, 1) logits."""

    def __init__(self, *, widths: tuple[int, ...], blocks_per_stage: int = 2, num_classes: int = 0):
        super().__init__()
        total = blocks_per_stage * len(widths)
        self.from_rgb = _conv(3, widths[-1], 1)
        stages = []
        for i in range(len(widths) - 1, 0, -1):  # highest resolution first
            layers = [ResidualBlock(widths[i], total_blocks=total) for _ in range(blocks_per_stage)]
            stages.append(nn.Sequential(*layers, Downsample(widths[i], widths[i - 1])))
        stages.append(nn.Sequential(*(ResidualBlock(widths[0], total_blocks=total) for _ in range(blocks_per_stage))))
        self.stages = nn.Sequential(*stages)
        c = widths[0]
        self.basis = _conv(c, c, START, groups=c)  # 4×4 depthwise, no padding: 4×4 → 1×1
        self.basis.padding = (0, 0)
        self.head = _msr(nn.Linear(c, 1, bias=False))  # a bias cancels in the relativistic loss
        self.projection = ClassProjection(c, num_classes) if num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.basis(self.stages(self.from_rgb(x))).flatten(1)
        return project(self.head(h), self.projection, h, labels)
