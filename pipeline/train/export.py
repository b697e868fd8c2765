"""The shippable generator out of a training checkpoint: the EMA weights when the job keeps an EMA."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.spec import JobSpec
from pipeline.train.build import build_networks
from pipeline.train.regularization import Regularization
from pipeline.train.state import TrainState, load_meta


def generator_from_checkpoint(directory: str | Path, spec: JobSpec) -> tuple[nn.Module, dict]:
    state = TrainState.load(directory)
    G, _ = build_networks(spec.model, resolution=spec.data.resolution, regs=Regularization.from_specs(spec.regularization))
    G.load_state_dict(state.ema if state.ema is not None else state.G)  # EMA.state_dict() is the averaged module's
    return G.eval(), load_meta(directory)
