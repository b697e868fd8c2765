"""Samples from a registered generator, using only what the registry contract promises
(pipeline/tracking/registry.py): the exported graph, its signature and its metadata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class RegisteredGenerator:
    """A registered generator called as G(z), or G(z, labels) when it is class-conditional (the labels
    go into the last input column, as the registry contract has it). `class_names` is None when
    unconditional."""

    def __init__(self, module, z_dim: int, class_names: list[str] | None):
        self.module, self.z_dim, self.class_names = module, z_dim, class_names

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.class_names:
            return self.module(z)
        if labels is None:
            raise ValueError("a class-conditional generator needs a class for every z")
        return self.module(torch.cat([z, labels.to(z.device, z.dtype)[:, None]], dim=1))

    def class_index(self, name_or_index: str) -> int:
        """A class given by name or index → its index; ValueError listing the classes."""
        if not self.class_names:
            raise ValueError("this generator is unconditional: it takes no class")
        if name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        if name_or_index.lstrip("-").isdigit() and 0 <= int(name_or_index) < len(self.class_names):
            return int(name_or_index)
        raise ValueError(f"unknown class {name_or_index!r}; this generator knows {', '.join(self.class_names)}"
                         f" (or an index 0..{len(self.class_names) - 1})")


def load_generator(model_uri: str, tracking_uri: str | None = None) -> tuple[RegisteredGenerator, int]:
    """(generator, z_dim): z_dim from the model's metadata (older versions: the signature's width)."""
    import mlflow

    from pipeline.tracking.run import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    info = mlflow.models.get_model_info(model_uri)
    meta = info.metadata or {}
    z_dim = int(meta.get("z_dim") or info.signature.inputs.inputs[0].shape[-1])
    names = meta.get("class_names")
    return RegisteredGenerator(mlflow.pytorch.load_model(model_uri), z_dim, list(names) if names else None), z_dim


def draw(generator: RegisteredGenerator, *, n: int, seed: int = 0, class_index: int | None = None
         ) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """(images in [-1, 1], labels or None, grid row width or None). A conditional generator without a
    class gives one row per class (n per row, at most 16 classes); with one, n samples of it."""
    from pipeline.eval.grid import class_grid_labels

    rng = torch.Generator().manual_seed(seed)
    labels, nrow = None, None
    if generator.class_names:
        if class_index is None:
            labels = class_grid_labels(len(generator.class_names), per_class=n)
            nrow = n
        else:
            labels = torch.full((n,), class_index, dtype=torch.int64)
    elif class_index is not None:
        raise ValueError("this generator is unconditional: it takes no class")
    z = torch.randn(n if labels is None else len(labels), generator.z_dim, generator=rng)
    with torch.no_grad():
        images = generator(z, labels)
    return images, labels, nrow


def sample(model_uri: str, *, n: int, output: Path, seed: int = 0, class_name: str | None = None,
           tracking_uri: str | None = None) -> int:
    """Write samples to `output`: a PNG grid, or (`.npz`) the raw images as uint8 N×H×W×3 with their
    class labels (-1 for an unconditional generator) and the class names. Returns the image count."""
    from pipeline.eval.grid import grid_image

    g, _ = load_generator(model_uri, tracking_uri)
    class_index = g.class_index(class_name) if class_name is not None else None
    images, labels, nrow = draw(g, n=n, seed=seed, class_index=class_index)
    if output.suffix.lower() == ".npz":
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.savez(output, images=pixels,
                 labels=(labels.numpy() if labels is not None else np.full(len(pixels), -1, dtype=np.int64)),
                 class_names=np.array(g.class_names or [], dtype=str))
    else:
        grid_image(images, nrow=nrow).save(output)
    return len(images)
