"""Samples from a registered generator, using only what the registry contract promises."""
from __future__ import annotations

from pathlib import Path

import torch


def load_generator(model_uri: str, tracking_uri: str | None = None) -> tuple[object, int]:
    """(generator, z_dim): z_dim comes from the logged signature, (-1, z_dim) float32."""
    import mlflow

    from pipeline.tracking.run import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    z_dim = mlflow.models.get_model_info(model_uri).signature.inputs.inputs[0].shape[-1]
    return mlflow.pytorch.load_model(model_uri), int(z_dim)


def sample_grid(model_uri: str, *, n: int, output: Path, seed: int = 0, tracking_uri: str | None = None) -> Path:
    from pipeline.eval.grid import grid_image

    g, z_dim = load_generator(model_uri, tracking_uri)
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = g(z)
    grid_image(images).save(output)
    return output
