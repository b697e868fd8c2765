"""bf16 on CUDA, as `scaling.precision: bf16` trains: every job's networks and GanStep under bf16 autocast
give finite losses and penalties, and the global batch norm (pipeline/gan/sync_bn.py) neither syncs
with the host nor fails on bf16 activations. Skipped without CUDA (bench/gpu.sh runs these)."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.gan.sync_bn import with_global_batch_norm
from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
JOBS = sorted(p.stem for p in (REPO / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("job", JOBS)
def test_bf16_steps_give_finite_losses(job):
    sets = ["data.root=unused", "train.global_batch=8", "scaling.num_workers=1", "eval=null"]
    spec = load_job(REPO / f"jobs/{job}.yaml", sets)
    if getattr(spec.model, "conditional", False) and spec.model.num_classes is None:
        spec = load_job(REPO / f"jobs/{job}.yaml", sets + ["model.num_classes=10"])  # the driver reads it from a manifest
    regs = Regularization.from_specs(spec.regularization)
    device = torch.device("cuda")
    torch.manual_seed(0)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device=device)
    step = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=8, z_dim=spec.model.z_dim,
                   autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    real = torch.rand(8, 3, spec.data.resolution, spec.data.resolution, device=device) * 2 - 1
    extra = (torch.randint(spec.model.num_classes, (8,), device=device),) if getattr(spec.model, "conditional", False) else ()
    for i in range(17):  # covers lazy regularizers every 4 and 16
        stats = step(i, real, *extra)
        values = {k: float(v) for k, v in stats.items() if k.startswith(("loss/", "reg/"))}
        assert values and all(math.isfinite(v) for v in values.values()), (i, values)
    assert all(torch.isfinite(p).all() for p in parts.G.parameters())


def test_global_batch_norm_on_cuda_never_syncs_and_takes_bf16():
    bn = with_global_batch_norm(nn.Sequential(nn.BatchNorm2d(16)), lambda t: t.detach().clone())[0].cuda()
    x = torch.randn(8, 16, 8, 8, device="cuda")
    bn(x.requires_grad_()).sum().backward()  # warm-up: lazy CUDA initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for dtype in (torch.float32, torch.bfloat16):
            xs = x.detach().to(dtype).requires_grad_()
            y = bn(xs)
            (y.float() ** 2).sum().backward()
            with torch.no_grad():
                bn(xs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert y.dtype == torch.bfloat16 and torch.isfinite(xs.grad.float()).all()
    ref = nn.BatchNorm2d(16).cuda()(x.detach())
    torch.testing.assert_close(bn.train()(x.detach()), ref, rtol=1e-4, atol=1e-4)
