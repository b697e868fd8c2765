"""Every job in jobs/ runs its real step (all phases, its regularizers, EMA, ADA) in-process on tiny
widths: the losses are finite, the regularizers it lists show up in the step's stats, and G moves."""
from pathlib import Path

import pytest
import torch

from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep, unwrap

REPO = Path(__file__).resolve().parents[2]
EXPECTED_STATS = {"r1": "reg/r1", "r2": "reg/r2", "wgan_gp": "reg/wgan_gp", "lecam": "reg/lecam", "ema": "ema/beta", "adaptive_augment": "ada/p"}


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_job_step_runs(job):
    overrides = ["model.g_width=4", "model.d_width=4", "train.global_batch=4", "scaling.num_workers=1", "data.resolution=16"]
    if load_job(job).model.kind == "r3gan":  # the presets' widths at 16 px: tiny ones keep this fast
        overrides += ["model.preset=null", "model.widths=[16, 8, 8]"]
    if load_job(job).model.conditional:  # the class count the driver would read from the manifest
        overrides += ["model.num_classes=3"]
    spec = load_job(job, overrides)
    regs = Regularization.from_specs(spec.regularization)
    torch.manual_seed(0)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device="cpu")
    step = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=4, z_dim=spec.model.z_dim, optim=spec.optim)
    labels = torch.tensor([0, 1, 2, 0]) if spec.model.conditional else None
    before = [p.detach().clone() for p in unwrap(parts.G).parameters()]
    seen = {}
    for i in range(max(regs.lazy_every, getattr(parts.ada, "interval", 1)) + 1):
        seen.update(step(i, torch.rand(4, 3, 16, 16) * 2 - 1, labels))
    assert all(torch.isfinite(torch.as_tensor(v)).all() for k, v in seen.items() if k != "ada/rt")
    for r in spec.regularization:
        if r.kind in EXPECTED_STATS:
            assert EXPECTED_STATS[r.kind] in seen, (r.kind, sorted(seen))
    assert any((a - b).abs().max() > 0 for a, b in zip(before, unwrap(parts.G).parameters()))
