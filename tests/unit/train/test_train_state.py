"""TrainState holds everything the next step depends on: a run stopped after a checkpoint, rebuilt from
scratch (other initial weights, a disturbed global RNG) and restored, continues bit for bit, with the
quickstart's batch norm and dropout on and ADA part-way through an interval; and for R3GAN's
class-conditional recipe (relativistic loss, lazy R1/R2, DiffAugment, scheduled lr, β2 and γ, EMA), also
with R1/R2 every step as the paper has them (taken from D's main pass: train/step.py)."""
from pathlib import Path

import pytest
import torch

from pipeline.spec import load_job
from pipeline.train.build import build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.state import RankState, TrainState
from pipeline.train.step import GanStep, unwrap

REPO = Path(__file__).resolve().parents[3]
B, STEPS, STOP = 4, 7, 3


R3GAN = ["model.preset=null", "model.widths=[16, 8, 8]", "model.blocks_per_stage=1", "model.num_classes=3", "data.resolution=16",
         "data.root=unused", f"train.global_batch={B}", "scaling.num_workers=1", "eval=null"]


def _spec(recipe: str = "quickstart"):
    if recipe.startswith("r3gan"):
        every = ["regularization.r1.every=1", "regularization.r2.every=1"] if recipe == "r3gan-every-step" else []
        return load_job(REPO / "jobs/r3gan-cifar10.yaml", [*R3GAN, "model.z_dim=8", *every,
                        "regularization.r1.gamma={kind: cosine, start: 0.5, end: 0.05, steps: 5}"])
    return load_job(REPO / "jobs/quickstart.yaml", [
        "model.g_width=4", "model.d_width=4", "data.resolution=16", "model.z_dim=8", "model.d_dropout=0.3",
        "data.root=unused", f"train.global_batch={B}", "scaling.num_workers=1", "eval=null",
        "regularization=[{kind: r1, gamma: 0.2, every: 2}, {kind: ema, beta: 0.9}, {kind: lecam},"
        " {kind: adaptive_augment, interval: 4, adjust_images: 16}]",
    ])


def _fresh(spec, seed: int):
    torch.manual_seed(seed)
    regs = Regularization.from_specs(spec.regularization)
    parts = build_parts(spec.model, spec.optim, resolution=16, regs=regs, device="cpu")
    if parts.ada is not None:
        parts.ada.p = 0.5
    return parts, GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=B, z_dim=8, optim=spec.optim)


def _weights(parts):
    return {**{f"G.{k}": v for k, v in unwrap(parts.G).state_dict().items()},
            **{f"D.{k}": v for k, v in unwrap(parts.D).state_dict().items()},
            **{f"ema.{k}": v for k, v in parts.ema.state_dict().items()}}


@pytest.mark.parametrize("recipe", ["quickstart", "r3gan", "r3gan-every-step"])
def test_resume_continues_bit_for_bit(tmp_path, recipe):
    spec = _spec(recipe)
    reals = torch.rand(STEPS, B, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    labels = torch.randint(3, (STEPS, B), generator=torch.Generator().manual_seed(4)) if spec.model.conditional else [None] * STEPS
    parts, step = _fresh(spec, 0)
    for i in range(STEPS):
        step(i, reals[i], labels[i])
    reference = _weights(parts)

    parts, step = _fresh(spec, 0)
    for i in range(STOP):
        step(i, reals[i], labels[i])
    mine = RankState.capture(data_position={"mode": "epoch"}, consumed=STOP * B, parts=parts, device=torch.device("cpu"))
    TrainState.capture(parts, step=STOP, ranks=[mine]).save(tmp_path, {"job": "t"})

    parts, step = _fresh(spec, 123)  # other initial weights
    saved = TrainState.load(tmp_path)
    saved.restore(parts, device=torch.device("cpu"))
    rank_state = saved.for_rank(0, 1)
    saved.apply_rank(rank_state, parts, device=torch.device("cpu"))
    torch.rand(1000)  # anything drawing from the global RNG after the build (a scorer, say)
    rank_state.restore_rng(torch.device("cpu"))
    for i in range(saved.step, STEPS):
        step(i, reals[i], labels[i])
    resumed = _weights(parts)
    assert saved.samples_seen == STOP * B and rank_state.data_position == {"mode": "epoch"}
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), \
        [k for k in reference if not torch.equal(resumed[k], reference[k])]


def test_without_the_rng_state_dropout_differs(tmp_path):
    """Guard: the test above would be vacuous if nothing drew from the global RNG after the restore."""
    spec = _spec()
    reals = torch.rand(2, B, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    runs = []
    for disturb in (False, True):
        parts, step = _fresh(spec, 0)
        if disturb:
            torch.rand(1000)
        step(0, reals[0])
        runs.append(_weights(parts))
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_schema_1_checkpoints_still_load(tmp_path):
    parts, _ = _fresh(_spec(), 0)
    old = {"step": 5, "samples_seen": 40, "G": unwrap(parts.G).state_dict(), "D": unwrap(parts.D).state_dict(),
           "g_opt": parts.g_opt.state_dict(), "d_opt": parts.d_opt.state_dict(), "data_positions": [{"batches": 5}, {"batches": 5}]}
    torch.save(old, tmp_path / "state.pt")
    state = TrainState.load(tmp_path)
    assert state.step == 5 and state.samples_seen == 40 and state.ranks[1].data_position == {"batches": 5}
    assert state.for_rank(1, 2).torch_rng is None  # no RNG was kept then: resumes, not bit-exactly
