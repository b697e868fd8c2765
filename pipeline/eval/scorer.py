"""FD/KID, precision/recall and memorization of a generator against one data set: what training (at
its eval interval) and `ganpipe eval` both call. Real images are read once, through the same reader
training uses, with their keys (which decide the held-out split)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from pipeline.data.config import DataSpec
from pipeline.data.decode import SampleDecoder, decode_config
from pipeline.data.errors import CorruptSampleError
from pipeline.data.manifest import load_manifest, shard_urls
from pipeline.data.reader import CorruptPolicy, iter_shard
from pipeline.eval.config import EvalSpec
from pipeline.eval.evaluate import evaluate

MAX_REAL = 10_000  # reference images: enough for stable statistics, bounded memory (10k×3×32×32 f32 = 120 MB)


def read_real_images(data: DataSpec, limit: int = MAX_REAL) -> tuple[Tensor, Tensor]:
    """Up to `limit` (images (N,3,R,R) in [-1,1], labels (N,)) in manifest order; corrupt samples follow
    the data spec's policy."""
    images, labels, _ = read_real_set(data, limit)
    return images, labels


def read_real_set(data: DataSpec, limit: int = MAX_REAL) -> tuple[Tensor, Tensor, list[str]]:
    """read_real_images plus each image's WebDataset key."""
    manifest, _ = load_manifest(data.root, data.endpoint_url)
    # The training stream's own policy: `skip` honours max_corrupt_fraction here too.
    policy = CorruptPolicy(data.on_corrupt, data.max_corrupt_fraction, manifest["num_samples"])
    # Training's decoder (packed png, or any-size jpg/png/webp fitted to the resolution), with a
    # centre crop and no flip: the reference images stay the same from one evaluation to the next.
    decode = SampleDecoder(decode_config(data, manifest, for_eval=True))
    images, labels, keys = [], [], []
    for url in shard_urls(data, manifest):
        for raw in iter_shard(url, endpoint_url=data.endpoint_url):
            try:
                array, label = decode(raw)
            except CorruptSampleError as e:
                policy.handle(e)
                continue
            images.append(array)
            labels.append(label)
            keys.append(raw["__key__"])
            if len(images) == limit:
                break
        if len(images) == limit:
            break
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x, torch.tensor(labels, dtype=torch.int64), keys


class GeneratorScorer:
    def __init__(self, spec: EvalSpec, data: DataSpec, manifest_sha256: str, *, device="cpu",
                 class_names: list[str] | None = None):
        """`class_names`: score a class-conditional generator (z, labels) → images, class by class too."""
        self.spec, self.data, self.manifest_sha256, self.device = spec, data, manifest_sha256, device
        self.class_names = class_names
        self._real: tuple[Tensor, Tensor, list[str]] | None = None

    def __call__(self, generator: Callable[..., Tensor], z_dim: int, *, seed: int = 0,
                 class_names: list[str] | None = None) -> dict:
        """evaluate()'s dict: fd, kid, precision, recall, memorization, num_samples, num_real,
        num_heldout, extractor, key (the evaluator key)."""
        if self._real is None:
            self._real = read_real_set(self.data)
        images, labels, keys = self._real
        has_labels = bool((labels >= 0).all())
        return evaluate(generator, z_dim, images, labels if has_labels else None, self.spec, self.manifest_sha256,
                        real_keys=keys, seed=seed, device=self.device, class_names=class_names or self.class_names)
