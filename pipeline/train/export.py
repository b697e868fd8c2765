"""The shippable generator out of a training checkpoint: the EMA weights when the job keeps an EMA."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.gan.models import build_models
from pipeline.spec import JobSpec
from pipeline.train.state import load_meta, load_state


def generator_from_checkpoint(directory: str | Path, spec: JobSpec) -> tuple[nn.Module, dict]:
    state = load_state(directory)
    m = spec.model
    G, _ = build_models(
        kind=m.kind, z_dim=m.z_dim, g_width=m.g_width, d_width=m.d_width,
        resolution=spec.data.resolution, g_norm=m.g_norm, d_dropout=m.d_dropout,
    )
    if any(r.kind == "spectral_norm" and r.target in ("generator", "both") for r in spec.regularization):
        from pipeline.train.worker import _with_spectral_norm

        G = _with_spectral_norm(G)
    weights = state.get("ema", state["G"])  # EMA.state_dict() is the averaged module's state dict
    G.load_state_dict(weights)
    return G.eval(), load_meta(directory)
