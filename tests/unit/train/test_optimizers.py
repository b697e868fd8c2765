"""Scheduled learning rate and β2: Adam's param groups carry the schedule's value at every step (D's
through the lazy-regularization adjustment), the values are logged, and fixed ones are left alone."""
import pytest
import torch

from pipeline.gan.config import AdamSpec, OptimSpec
from pipeline.gan.schedules import schedule_value
from pipeline.train.optimizers import OptimizerSchedule, adam_at, build_adam


def _spec():
    cosine_lr = {"kind": "cosine", "start": 2e-4, "end": 5e-5, "steps": 10}
    beta2 = {"kind": "linear", "start": 0.9, "end": 0.99, "steps": 10}
    return OptimSpec(g=AdamSpec(lr=cosine_lr, betas=(0.0, beta2)), d=AdamSpec(lr=1e-3, betas=(0.0, 0.99)))


def test_every_step_sets_the_scheduled_values():
    optim = _spec()
    g, d = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    g_opt, d_opt = build_adam(g, optim.g), build_adam(d, optim.d, lazy_every=4)
    schedule = OptimizerSchedule(optim, lazy_every=4)
    for step in (0, 3, 10, 25):
        logged = schedule.apply(step, g_opt=g_opt, d_opt=d_opt)
        lr = schedule_value("cosine", start=2e-4, end=5e-5, steps=10, warmup=0, step=step)
        b2 = schedule_value("linear", start=0.9, end=0.99, steps=10, warmup=0, step=step)
        assert g_opt.param_groups[0]["lr"] == pytest.approx(lr) and g_opt.param_groups[0]["betas"][1] == pytest.approx(b2)
        assert logged == pytest.approx({"optim/g_lr": lr, "optim/g_beta2": b2})  # D's are fixed: not logged
    # D keeps its lazy-adjusted constants (lr·4/5, β^(4/5)) untouched by the schedule.
    assert d_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 4 / 5)
    assert d_opt.param_groups[0]["betas"][1] == pytest.approx(0.99 ** 0.8)


def test_a_scheduled_lazy_d_is_adjusted_at_every_step():
    lr = {"kind": "linear", "start": 1e-3, "end": 0.0001, "steps": 4}
    assert adam_at(AdamSpec(lr=lr, betas=(0.0, 0.9)), 2, lazy_every=4)[0] == pytest.approx(5.5e-4 * 0.8)


def test_betas_out_of_range_are_refused():
    with pytest.raises(ValueError, match="must be < 1"):
        AdamSpec(betas=(0.0, {"kind": "linear", "start": 0.9, "end": 1.0, "steps": 4}))
    with pytest.raises(ValueError, match="must be > 0"):
        AdamSpec(lr={"kind": "linear", "start": 1e-3, "end": 0.0, "steps": 4})
