"""Lazy R1 in the step loop: D's optimizer carries StyleGAN2's adjusted lr and betas, the reg phase
runs (as its own optimizer step) exactly on steps divisible by `every`, with the penalty times `every`."""
import copy

import pytest
import torch

from pipeline.spec import parse_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanStep


def _spec(every: int, gamma: float = 1.0):
    return parse_job({
        "name": "lazy",
        "data": {"root": "unused", "resolution": 16},
        "model": {"z_dim": 8, "g_width": 4, "d_width": 4, "g_norm": "none", "d_dropout": 0.0},
        "regularization": [{"kind": "r1", "gamma": gamma, "every": every}],
        "optim": {"d": {"lr": 0.0017, "betas": [0.0, 0.99]}},
        "train": {"steps": 10, "global_batch": 4},
        "scaling": {"num_workers": 1},
    })


def _step_fn(spec):
    regs = Regularization.from_specs(spec.regularization)
    torch.manual_seed(0)
    parts = build_parts(spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device="cpu")
    return parts, GanStep(parts, loss="nonsaturating", regs=regs, global_batch=4, z_dim=8)


def test_d_optimizer_gets_lazy_lr_and_betas():
    parts, _ = _step_fn(_spec(every=16))
    group = parts.d_opt.param_groups[0]
    c = 16 / 17
    assert group["lr"] == pytest.approx(0.0017 * c)
    assert group["betas"] == pytest.approx((0.0, 0.99**c))
    assert parts.g_opt.param_groups[0]["lr"] == pytest.approx(2e-4)  # G untouched


def test_reg_phase_runs_every_k_steps_as_an_extra_d_step():
    parts, step = _step_fn(_spec(every=4))
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    due = []
    for i in range(8):
        stats = step(i, real)
        due.append("reg/r1" in stats)
    assert due == [True, False, False, False, True, False, False, False]
    d_steps = parts.d_opt.state[next(iter(parts.d_opt.state))]["step"]
    assert int(d_steps) == 8 + 2  # 8 main steps + 2 reg steps


def test_reg_phase_scales_the_penalty_by_the_gain():
    """The reg step's update equals one taken on (γ/2)·R1·every: compare with a penalty of γ·every, every=1."""
    spec_lazy = _spec(every=4, gamma=1.0)
    parts, step = _step_fn(spec_lazy)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    D0 = copy.deepcopy(parts.D.state_dict())
    z = step._global_draw(0, 0, 4, 8, normal=True)
    with torch.no_grad():
        fake = parts.G(z)
    stats = {}
    parts.d_opt.zero_grad()
    step.d_reg(0, real, fake, stats)
    lazy_grads = {n: p.grad.clone() for n, p in parts.D.named_parameters() if p.grad is not None}
    parts.D.load_state_dict(D0)  # undo the reg step's update, then redo its gradient by hand
    parts.D.zero_grad(set_to_none=True)
    from pipeline.gan.penalties import r1_penalty

    pen, _ = r1_penalty(parts.D, real)
    (pen * 0.5 * 4).backward()
    checked = 0
    for n, p in parts.D.named_parameters():
        if p.grad is not None and p.grad.abs().max() > 0:
            assert torch.allclose(p.grad, lazy_grads[n], rtol=1e-4, atol=1e-8), n
            checked += 1
    assert checked >= 2
