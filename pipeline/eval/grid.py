"""Sample grids: a batch of images in [-1, 1] tiled into one PNG, the way people look at GAN samples."""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def grid_image(images: torch.Tensor, *, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """(N, C, H, W) in [-1, 1] → an RGB image of √N × √N tiles (or `nrow` per row) on black."""
    images = images.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.uint8)
    pixels = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if c == 1:
        pixels = pixels.repeat(3, axis=3)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = pixels[i]
    return Image.fromarray(canvas)


def grid_png(images: torch.Tensor, **kwargs) -> bytes:
    buf = io.BytesIO()
    grid_image(images, **kwargs).save(buf, format="PNG")
    return buf.getvalue()


def class_grid_labels(num_classes: int, *, per_class: int = 8, max_classes: int = 16) -> torch.Tensor:
    """Labels for a grid with one row per class (the first `max_classes`), `per_class` samples a row:
    pass nrow=per_class to grid_image."""
    return torch.arange(min(num_classes, max_classes)).repeat_interleave(per_class)
