"""Tiny packed data sets for the data-plane unit tests (tens of samples: each test stays < 1 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.pack import pack

torch.set_num_threads(1)


def make_npz(path, count: int, side: int = 8, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    labels = np.arange(count) % 10
    np.savez(path, images=images, labels=labels)
    return str(path)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> str:
    return make_npz(tmp_path_factory.mktemp("src") / "tiny.npz", count=50)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, tiny_npz) -> str:
    """50 samples at 8x8 in shards of 16, 16, 16, 2: uneven on purpose."""
    root = tmp_path_factory.mktemp("tiny")
    pack(tiny_npz, str(root), shard_size=16, resolution=8, progress=False)
    return str(root)
