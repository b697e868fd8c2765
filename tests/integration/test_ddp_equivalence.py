"""Correct under DDP: the same job on 1 worker × global batch B and on 2 Ray workers × B/2 ends with
the same G, D and EMA weights (to 1e-5), with lazy R1 + L2 + EMA and with WGAN-GP.

The run goes through the production pieces (build_parts → prepare_model's DDP, GanStep, noise), in
float64 so that the comparison measures the maths, not float32 summation order; the data are a
fixed global batch per step, sliced by rank, as the stream's per-rank share would be.
"""
import pytest
import torch

from pipeline.spec import parse_job

pytestmark = pytest.mark.integration

STEPS, B = 6, 8


def _train(config):
    import ray.train

    from pipeline.spec import JobSpec
    from pipeline.train.loop import GanStep, unwrap
    from pipeline.train.regularization import Regularization
    from pipeline.train.worker import _all_reduce_sum, build_parts

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    spec = JobSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(spec.train.seed)
    regs = Regularization.from_specs(spec.regularization)
    parts = build_parts(spec, regs, "cpu")
    step_fn = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=B, z_dim=spec.model.z_dim, all_reduce=_all_reduce_sum,
                      generator=torch.Generator().manual_seed(5), rank=rank, seed=0)
    per, r = B // world, spec.data.resolution
    reals = torch.rand(STEPS, B, 3, r, r, generator=torch.Generator().manual_seed(99)) * 2 - 1
    for step in range(STEPS):
        step_fn(step, reals[step, rank * per : (rank + 1) * per])
    if rank == 0:
        torch.save({"G": unwrap(parts.G).state_dict(), "D": unwrap(parts.D).state_dict(),
                    "ema": parts.ema.state_dict()}, config["out"])


def _job(workers: int, loss: str, regs: list) -> dict:
    return parse_job({
        "name": "ddp-eq",
        "data": {"root": "unused", "resolution": 16},
        "model": {"kind": "dcgan", "z_dim": 8, "g_width": 4, "d_width": 4, "g_norm": "none", "d_dropout": 0.0},
        "loss": {"kind": loss},
        "regularization": regs,
        "optim": {"g": {"lr": 1e-3}, "d": {"lr": 1e-3}},
        "train": {"steps": STEPS, "global_batch": B},
        "scaling": {"num_workers": workers},
    }).model_dump(mode="json")


def _run(workers: int, spec: dict, out) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(
        _train,
        train_loop_config={"spec": spec, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=f"ddp-eq-{out.stem}", storage_path=str(out.parent / "ray")),
    ).fit()
    return torch.load(out, weights_only=True)


CASES = {
    "lazy_r1_l2_ema": ("nonsaturating", [
        {"kind": "r1", "gamma": 1.0, "every": 2},
        {"kind": "l2", "weight": 1e-3, "target": "discriminator"},
        {"kind": "ema", "beta": 0.9},
    ]),
    "wgan_gp": ("wasserstein", [
        {"kind": "wgan_gp", "weight": 10.0},
        {"kind": "l2", "weight": 1e-3, "target": "generator"},
        {"kind": "ema", "beta": 0.9},
    ]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_worker_equals_two_workers(case, ray_local, tmp_path):
    loss, regs = CASES[case]
    one = _run(1, _job(1, loss, regs), tmp_path / "one.pt")
    two = _run(2, _job(2, loss, regs), tmp_path / "two.pt")
    torch.manual_seed(0)
    from pipeline.gan.models import build_models

    G0, _ = build_models(kind="dcgan", z_dim=8, g_width=4, d_width=4, resolution=16, g_norm="none", d_dropout=0.0)
    moved = max((one["G"][k].double() - v.double()).abs().max().item() for k, v in G0.state_dict().items())
    assert moved > 1e-3, "training did not change G: the comparison would be vacuous"
    for part in ("G", "D", "ema"):
        assert one[part].keys() == two[part].keys()
        worst = max((one[part][k] - two[part][k]).abs().max().item() for k in one[part])
        assert worst < 1e-5, f"{part}: 1 worker vs 2 workers differ by {worst:.3g}"
