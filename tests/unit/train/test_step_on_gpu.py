"""On a GPU a training step never waits for the device: z, ε and augmentation are drawn there from
(seed, step)-seeded generators and ADA/LeCam counts stay host numbers. torch's sync debug mode turns
any synchronising call (a host → device copy of a Python number, .item(), ...) into an error.
Skipped without CUDA; the same step's CPU behaviour is covered by the other tests."""
from pathlib import Path

import pytest
import torch

from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("recipe", ["wgan-gp", "resnet-diffaugment-lecam", "adaptive-augment", "quickstart"])
def test_steps_do_not_sync_with_the_host(recipe):
    spec = load_job(REPO / f"jobs/{recipe}.yaml", ["data.root=unused", "train.global_batch=8", "scaling.num_workers=1", "eval=null"])
    regs = Regularization.from_specs(spec.regularization)
    device = torch.device("cuda")
    torch.manual_seed(0)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device=device)
    if parts.ada is not None:
        parts.ada.p, parts.ada.interval = 0.5, 10_000  # augment, and keep its (intended) update sync out of the window
    step = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=8, z_dim=spec.model.z_dim)
    real = (torch.rand(8, 3, spec.data.resolution, spec.data.resolution) * 2 - 1).to(device)
    step(0, real)  # warm-up: lazy initialisation (cuDNN, optimizer state) may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1, 5):
            step(i, real)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
