"""SNGAN's ResNet generator and discriminator (Miyato et al., ICLR 2018, Tables 4–5, the CIFAR-10 models).

Generator, R = 32, width w (the paper: w = 256):
    z ─Linear─▶ 4×4×w ─up-block─▶ 8×8 ─up-block─▶ 16×16 ─up-block─▶ 32×32 ─BN, ReLU, conv3×3─▶ 3 ─tanh─▶
  one up-block per doubling: log2(R/4) of them (R = 64: four).
  up-block: residual  BN → ReLU → nearest ×2 → conv3×3 → BN → ReLU → conv3×3
            shortcut  nearest ×2 → conv1×1
Discriminator, R = 32, width w (the paper: w = 128):
    x ─first block, ↓─▶ 16×16×w ─block ↓─▶ 8×8 ─block─▶ 8×8 ─block─▶ 8×8 ─ReLU, Σ over H,W─▶ w ─Linear─▶ 1
  downsampling blocks until 8×8 (log2(R/8) of them, the first included), then two at 8×8, as in the
  paper's CIFAR model; R = 64 gets one more downsampling block.
  block:       residual ReLU → conv3×3 → ReLU → conv3×3 → avgpool ×½     shortcut conv1×1 → avgpool ×½
  first block: residual conv3×3 → ReLU → conv3×3 → avgpool ×½             shortcut avgpool ×½ → conv1×1
               (no ReLU on the raw image; pooling before the 1×1 conv is the same map, 4× cheaper)
  A block that neither downsamples nor changes width has the identity as its shortcut.

Widths are constant across blocks, as in the CIFAR models; tests use tiny ones. Spectral norm is not
applied here: the caller wraps conv/linear layers with torch.nn.utils.parametrizations.spectral_norm.
Initialisation follows the reference chainer code: Xavier-uniform, gain √2 on the residual convs (they
feed ReLUs), 1 elsewhere. ReLUs are never in-place: a block's input also feeds its shortcut, and the
gradient penalties differentiate through D twice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.gan.conditioning import ClassInput, ClassProjection, project

START = 4  # G's first feature map is 4×4
D_END = 8  # D downsamples to 8×8


def _check_resolution(resolution: int, smallest: int) -> None:
    n = math.log2(resolution) if resolution > 0 else -1
    if resolution < smallest or n != int(n):
        raise ValueError(f"resolution must be a power of two >= {smallest}, got {resolution}")


def _conv(c_in: int, c_out: int, kernel: int, gain: float) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


def _norm(kind: str, channels: int) -> nn.Module:
    if kind not in ("batch", "none"):
        raise ValueError(f"norm must be 'batch' or 'none', got {kind!r}")
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class UpBlock(nn.Module):
    """Generator block: doubles H and W."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.norm1, self.conv1 = _norm(norm, c_in), _conv(c_in, c_out, 3, math.sqrt(2))
        self.norm2, self.conv2 = _norm(norm, c_out), _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """Discriminator block; halves H and W when `down`. `first`: the block that reads the image."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _conv(c_in, c_out, 3, math.sqrt(2))
        self.conv2 = _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0) if (down or c_in != c_out) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.first:
            s = self.shortcut(F.avg_pool2d(x, 2))
        else:
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetGenerator(nn.Module):
    """(N, z_dim) → (N, image_channels, R, R) in [−1, 1]."""

    def __init__(
        self,
        z_dim: int = 128,
        width: int = 128,
        resolution: int = 32,
        norm: str = "batch",
        image_channels: int = 3,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_resolution(resolution, 2 * START)
        self.z_dim, self.width, self.resolution, self.num_classes = z_dim, width, resolution, num_classes
        self.class_input = ClassInput(num_classes, z_dim)
        self.dense = nn.Linear(z_dim + self.class_input.embed_dim, START * START * width)
        nn.init.xavier_uniform_(self.dense.weight, 1.0)
        nn.init.zeros_(self.dense.bias)
        n_up = int(math.log2(resolution // START))  # 32: 4 → 8 → 16 → 32, three blocks
        self.blocks = nn.Sequential(*(UpBlock(width, width, norm) for _ in range(n_up)))
        self.out_norm = _norm(norm, width)
        self.out_conv = _conv(width, image_channels, 3, 1.0)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.dense(self.class_input(z, labels)).view(z.shape[0], self.width, START, START)
        x = self.blocks(x)
        return torch.tanh(self.out_conv(F.relu(self.out_norm(x))))


class ResNetDiscriminator(nn.Module):
    """(N, image_channels, R, R) → (N, 1) logits."""

    def __init__(self, width: int = 128, resolution: int = 32, image_channels: int = 3, num_classes: int = 0):
        super().__init__()
        _check_resolution(resolution, 2 * D_END)
        n_down = int(math.log2(resolution // D_END))  # 32: 32 → 16 → 8, two downsampling blocks
        blocks = [DownBlock(image_channels, width, down=True, first=True)]
        blocks += [DownBlock(width, width, down=True) for _ in range(n_down - 1)]
        blocks += [DownBlock(width, width, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.head.weight, 1.0)
        nn.init.zeros_(self.head.bias)
        self.projection = ClassProjection(width, num_classes) if num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = F.relu(self.blocks(x))
        # Global *sum* pooling, as in SNGAN: the logit scales with the 8×8 area rather than averaging it.
        h = h.sum(dim=(2, 3))
        return project(self.head(h), self.projection, h, labels)
