"""The seed's DCGAN, as it was meant, at any power-of-two resolution ≥ 16.

Generator: z → Dense(8·8·4w, no bias) → BN → LeakyReLU → ConvT 5×5 stride 1 (4w→2w) → BN → LReLU
→ log2(R/8) ConvT 5×5 stride 2 stages halving channels, the last one to 3 channels with tanh.
At R=32, w=64 this is the tutorial's 256→128→64→3 with 8→8→16→32 pixels.
Discriminator: log2(R/8) Conv 5×5 stride 2 (3→w→2w→…), LeakyReLU, Dropout → Flatten(8·8·C) → Dense 1.
At R=32: 3→64→128 with 32→16→8 pixels, then 8·8·128 → 1 logit.
Class-conditional (num_classes > 0): G's dense layer reads [z, class embedding] and D adds the
projection ⟨embed(y), flattened features⟩ to its logit (gan/conditioning.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.gan.conditioning import ClassInput, ClassProjection, project

BASE = 8  # the dense layer reshapes to an 8×8 map


def _stages(resolution: int) -> int:
    n = math.log2(resolution / BASE)
    if resolution < 2 * BASE or n != int(n):
        raise ValueError(f"resolution must be a power of two ≥ {2 * BASE}, got {resolution}")
    return int(n)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class DCGANGenerator(nn.Module):
    def __init__(self, *, z_dim: int = 100, width: int = 64, resolution: int = 32, norm: str = "batch", num_classes: int = 0):
        super().__init__()
        self.z_dim, self.resolution, self.num_classes = z_dim, resolution, num_classes
        c = 4 * width
        self.class_input = ClassInput(num_classes, z_dim)
        self.dense = nn.Linear(z_dim + self.class_input.embed_dim, BASE * BASE * c, bias=False)
        self.dense_act = nn.Sequential(_norm(norm, c), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = [
            # padding 2 keeps 5×5 "same" at stride 1; bias is redundant before BN.
            nn.ConvTranspose2d(c, c // 2, 5, stride=1, padding=2, bias=norm != "batch"),
            _norm(norm, c // 2),
            nn.LeakyReLU(0.2),
        ]
        c //= 2
        n = _stages(resolution)
        for i in range(n):
            last = i == n - 1
            out = 3 if last else c // 2
            # stride 2, padding 2, output_padding 1: H → 2H exactly for a 5×5 kernel.
            layers.append(nn.ConvTranspose2d(c, out, 5, stride=2, padding=2, output_padding=1, bias=last or norm != "batch"))
            layers += [nn.Tanh()] if last else [_norm(norm, out), nn.LeakyReLU(0.2)]
            c = out
        self.convs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dense_act(self.dense(self.class_input(z, labels)).view(z.shape[0], -1, BASE, BASE))
        return self.convs(x)


class DCGANDiscriminator(nn.Module):
    def __init__(self, *, width: int = 64, resolution: int = 32, dropout: float = 0.3, num_classes: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = 3, width
        for _ in range(_stages(resolution)):
            layers += [nn.Conv2d(c_in, c, 5, stride=2, padding=2), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            c_in, c = c, c * 2
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(BASE * BASE * c_in, 1)
        self.projection = ClassProjection(BASE * BASE * c_in, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convs(x).flatten(1)
        return project(self.head(h), self.projection, h, labels)


def build_models(*, kind: str, z_dim: int, g_width: int, d_width: int, resolution: int, g_norm: str, d_dropout: float,
                 num_classes: int = 0, preset: str | None = None, widths: tuple[int, ...] | None = None,
                 blocks_per_stage: int = 2):
    """(G, D) for a model kind; plain arguments so modules never see a spec. `num_classes` > 0 makes
    both class-conditional; `preset`/`widths`/`blocks_per_stage` are r3gan's."""
    if kind == "dcgan":
        return (
            DCGANGenerator(z_dim=z_dim, width=g_width, resolution=resolution, norm=g_norm, num_classes=num_classes),
            DCGANDiscriminator(width=d_width, resolution=resolution, dropout=d_dropout, num_classes=num_classes),
        )
    if kind == "resnet":
        from pipeline.gan.resnet import ResNetDiscriminator, ResNetGenerator

        return (
            ResNetGenerator(z_dim=z_dim, width=g_width, resolution=resolution, norm=g_norm, num_classes=num_classes),
            ResNetDiscriminator(width=d_width, resolution=resolution, num_classes=num_classes),
        )
    if kind == "r3gan":
        from pipeline.gan.r3gan import R3GANDiscriminator, R3GANGenerator, widths_for

        chosen = widths_for(resolution, preset=preset, widths=widths)
        return (
            R3GANGenerator(z_dim=z_dim, widths=chosen, blocks_per_stage=blocks_per_stage, num_classes=num_classes),
            R3GANDiscriminator(widths=chosen, blocks_per_stage=blocks_per_stage, num_classes=num_classes),
        )
    raise ValueError(f"unknown model kind {kind!r}")
