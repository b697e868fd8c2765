"""The shippable generator out of a training checkpoint: the EMA weights when the job keeps an EMA."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.spec import JobSpec
from pipeline.train.regularization import Regularization
from pipeline.train.state import load_meta, load_state
from pipeline.train.worker import build_networks


def generator_from_checkpoint(directory: str | Path, spec: JobSpec) -> tuple[nn.Module, dict]:
    state = load_state(directory)
    G, _ = build_networks(spec, Regularization.from_specs(spec.regularization))
    G.load_state_dict(state.get("ema", state["G"]))  # EMA.state_dict() is the averaged module's state dict
    return G.eval(), load_meta(directory)
