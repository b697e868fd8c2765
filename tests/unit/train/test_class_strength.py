"""model.class_strength: the step sets λ in G, D and (through its buffer copy) the EMA generator
from the schedule, every step, and logs it; a constant λ is set but not logged."""
from pathlib import Path

import torch

from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep, unwrap

REPO = Path(__file__).resolve().parents[3]
B = 4
TINY = ["model.preset=null", "model.widths=[16, 8, 8]", "model.blocks_per_stage=1", "model.num_classes=3",
        "model.z_dim=8", "data.resolution=16", "data.root=unused", f"train.global_batch={B}", "scaling.num_workers=1",
        "eval=null"]


def _step(class_strength: str):
    spec = load_job(REPO / "jobs/r3gan-cifar10.yaml", [*TINY, f"model.class_strength={class_strength}"])
    torch.manual_seed(0)
    regs = Regularization.from_specs(spec.regularization)
    parts = build_parts(spec.model, spec.optim, resolution=16, regs=regs, device="cpu")
    return parts, GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=B, z_dim=8, optim=spec.optim,
                          class_strength=spec.model.class_strength)


def _strengths(parts) -> list[float]:
    G, D = unwrap(parts.G), unwrap(parts.D)
    return [G.class_input.strength.item(), D.projection.strength.item(), parts.ema.module.class_input.strength.item()]


def test_a_scheduled_class_strength_is_set_in_g_d_and_the_ema_and_logged():
    parts, step = _step("{kind: linear, start: 0.0, end: 1.0, steps: 4}")
    reals, labels = torch.rand(B, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0])
    for i, expected in [(0, 0.0), (2, 0.5), (6, 1.0)]:
        stats = step(i, reals, labels)
        assert stats["cond/class_strength"] == expected
        assert _strengths(parts) == [expected] * 3


def test_a_constant_class_strength_is_set_not_logged():
    parts, step = _step("0.25")
    stats = step(0, torch.rand(B, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0]))
    assert "cond/class_strength" not in stats and _strengths(parts) == [0.25] * 3
