"""Shared helpers for the eval unit tests: one CPU thread (the machine is shared), tiny data."""

import pytest
import torch

torch.set_num_threads(1)


def blobs(n: int, *, classes: int = 3, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable toy images in [-1, 1]: class k lights up a different 4x4 patch, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.full((n, 3, size, size), -0.8) + 0.2 * torch.randn(n, 3, size, size, generator=g)
    for k in range(classes):
        r, c = divmod(k, 2)
        images[labels == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.2
    return images.clamp(-1, 1), labels


@pytest.fixture
def make_blobs():
    # A fixture, not an import: `import conftest` would be ambiguous beside other test folders.
    return blobs


@pytest.fixture
def toy_data():
    return blobs(300)
