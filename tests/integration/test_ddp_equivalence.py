"""Correct under DDP: the same job on 1 worker × global batch B and on 2 Ray workers × B/2 ends with the
same G, D and EMA weights and the same last gradients (to 1e-5), case by case:

  quickstart     jobs/quickstart.yaml's model (DCGAN, batch norm in G, synced over ranks), lazy R1, L2, EMA
  wgan_gp        Wasserstein loss with WGAN-GP (ε drawn for the global batch), L2 on G, batch norm
  hinge_sn_...   hinge loss, spectral norm on G and D, LeCam (anchors all-reduced) with a linear
                 strength schedule, adaptive augmentation (r_t all-reduced; p starts at 0.5 so the
                 augmentation runs from step 0), EMA
  lsgan_resnet   least-squares loss, SNGAN's ResNet pair (batch norm in G), DiffAugment, R1 under a
                 cosine schedule, EMA
  r3gan_rpgan    R3GAN's ResNeXt pair, class-conditional (embedding in G, projection in D, the labels
                 sliced by rank like the reals, the class strength ramped), the relativistic pairing loss, R1 and R2 every step
                 (taken from D's main pass) under cosine schedules, scheduled lr and β2, EMA by half-life
  sgd            plain SGD instead of Adam: Adam is invariant to a constant gradient scale, so an Adam-only
                 test cannot see ranks' gradients summed instead of averaged; SGD's step (and the
                 gradients compared in every case) can.

Dropout is off here (d_dropout 0): its masks are drawn per rank from each rank's RNG, by nature not
the same as one rank's masks over the whole batch. Everything else random (z, ε, augmentation) is
drawn for the global batch and sliced by rank, which is what this test holds to.

The runs go through the production pieces (build_parts with prepare_model's DDP and the batch-norm
sync the worker uses, GanStep), in float64 so that the comparison measures the maths, not float32
summation order; the data are a fixed global batch per step, sliced by rank as the stream's share
would be. All cases run in one Ray Train run per worker count, to pay the worker start-up twice only.

Reached here: ≤ 1e-15 on every case but the ResNet's G (~5e-7): its convs before batch norm keep
their biases (as in SNGAN), whose gradient is zero in exact arithmetic; Adam turns the rounding noise
of that zero into lr-sized steps, different noise for a different split. Weights that matter agree.
"""
from pathlib import Path

import pytest
import torch

from pipeline.spec import load_job

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEPS, B, RES = 6, 8, 16
TINY = ["model.g_width=4", "model.d_width=4", f"data.resolution={RES}", "model.d_dropout=0", "model.z_dim=8",
        "data.root=unused", f"train.global_batch={B}", f"train.steps={STEPS}", "eval=null",
        "optim.g.lr=1e-3", "optim.d.lr=1e-3"]

CASES = {
    "quickstart": ("quickstart", []),
    "wgan_gp": ("quickstart", ["loss.kind=wasserstein",
                               "regularization=[{kind: wgan_gp, weight: 10.0}, {kind: l2, weight: 1.0e-3, target: generator}, {kind: ema, beta: 0.9}]"]),
    "hinge_sn_lecam_ada_schedule": ("quickstart", [
        "loss.kind=hinge",
        "regularization=[{kind: spectral_norm, target: both}, {kind: lecam, weight: {kind: linear, start: 0.1, end: 0.5, steps: 6}},"
        " {kind: adaptive_augment, interval: 2, adjust_images: 64, rt_target: 0.3}, {kind: ema, beta: 0.9}]"]),
    "lsgan_resnet": ("quickstart", [
        "model.kind=resnet", "loss.kind=least_squares",
        "regularization=[{kind: diffaugment}, {kind: r1, gamma: {kind: cosine, start: 1.0, end: 0.1, steps: 6}}, {kind: ema, beta: 0.9}]"]),
    "r3gan_rpgan": ("quickstart", [
        "model.kind=r3gan", "model.widths=[16, 8, 8]", "model.blocks_per_stage=1", "model.conditional=true",
        "model.num_classes=3", "model.class_strength={kind: linear, start: 0.2, end: 1.0, steps: 6}", "loss.kind=relativistic",
        "regularization=[{kind: r1, gamma: {kind: cosine, start: 1.0, end: 0.1, steps: 6}}, {kind: r2, gamma: 0.5},"
        " {kind: ema, half_life_images: 20, rampup: 0.5}]",
        "optim.g={lr: {kind: cosine, start: 1.0e-3, end: 1.0e-4, steps: 6}, betas: [0.0, {kind: linear, start: 0.9, end: 0.99, steps: 6}]}",
        "optim.d={lr: 1.0e-3, betas: [0.0, {kind: cosine, start: 0.9, end: 0.99, steps: 6}]}"]),
    "sgd": ("quickstart", ["regularization=[{kind: l2, weight: 1.0e-3, target: discriminator}]"]),
}


def _spec(case: str, workers: int) -> dict:
    job, overrides = CASES[case]
    return load_job(REPO / f"jobs/{job}.yaml", [*TINY, f"scaling.num_workers={workers}", *overrides]).model_dump(mode="json")


def _train(config):
    import ray.train

    from pipeline.spec import JobSpec
    from pipeline.train import dist
    from pipeline.train.build import batch_norm_sync, build_parts
    from pipeline.train.regularization import Regularization
    from pipeline.train.step import GanStep, unwrap
    from pipeline.train.worker import _ddp

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    results = {}
    for case, raw in config["specs"].items():
        spec = JobSpec.model_validate(raw)
        torch.manual_seed(spec.train.seed)
        regs = Regularization.from_specs(spec.regularization)
        parts = build_parts(spec.model, spec.optim, resolution=RES, regs=regs, device="cpu", wrap=_ddp,
                            batch_norm_sync=batch_norm_sync(spec.model, world_size=world, backend="gloo", all_reduce=dist.all_reduce_sum))
        if case == "sgd":
            parts.g_opt = torch.optim.SGD(parts.G.parameters(), lr=0.05)
            parts.d_opt = torch.optim.SGD(parts.D.parameters(), lr=0.05)
        if parts.ada is not None:
            parts.ada.p = 0.5
        G0 = {k: v.detach().clone() for k, v in unwrap(parts.G).named_parameters()}
        step_fn = GanStep(parts, loss=spec.loss.kind, regs=regs, global_batch=B, z_dim=spec.model.z_dim,
                          all_reduce=dist.all_reduce_sum, rank=rank, seed=spec.train.seed,
                          optim=None if case == "sgd" else spec.optim, class_strength=spec.model.class_strength)
        per = B // world
        reals = torch.rand(STEPS, B, 3, RES, RES, generator=torch.Generator().manual_seed(99)) * 2 - 1
        labels = torch.randint(spec.model.classes or 1, (STEPS, B), generator=torch.Generator().manual_seed(98))
        for step in range(STEPS):
            mine = slice(rank * per, (rank + 1) * per)
            step_fn(step, reals[step, mine], labels[step, mine] if spec.model.conditional else None)
        G, D = unwrap(parts.G), unwrap(parts.D)
        results[case] = {
            "G": G.state_dict(), "D": D.state_dict(), "ema": parts.ema.state_dict() if parts.ema else {},
            "grad": {f"{net}.{n}": p.grad for net, m in (("G", G), ("D", D)) for n, p in m.named_parameters() if p.grad is not None},
            "G_moved": max((p.detach() - G0[k]).abs().max().item() for k, p in G.named_parameters()),
            "ada_p": parts.ada.p if parts.ada else None,
        }
    if rank == 0:
        torch.save(results, config["out"])


def _run(workers: int, out: Path) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(
        _train,
        train_loop_config={"specs": {case: _spec(case, workers) for case in CASES}, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=f"ddp-eq-{out.stem}", storage_path=str(out.parent / "ray")),
    ).fit()
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_eq")
    return _run(1, tmp / "one.pt"), _run(2, tmp / "two.pt")


@pytest.mark.parametrize("case", list(CASES))
def test_one_worker_equals_two_workers(case, runs):
    one, two = runs[0][case], runs[1][case]
    assert one["G_moved"] > 1e-3, "training did not change G: the comparison would be vacuous"
    assert len(one["grad"]) > 4 and one["grad"].keys() == two["grad"].keys()
    if one["ada_p"] is not None:
        assert one["ada_p"] != 0.5 and one["ada_p"] == two["ada_p"], "ADA's p must move, and alike"
    for part in ("G", "D", "ema", "grad"):
        assert one[part].keys() == two[part].keys()
        worst = max((one[part][k].double() - two[part][k].double()).abs().max().item() for k in one[part]) if one[part] else 0.0
        assert worst < 1e-5, f"{case} {part}: 1 worker vs 2 workers differ by {worst:.3g}"


def test_batch_norm_is_synced_in_the_two_worker_run(runs):
    """The quickstart's G has batch norm: without the sync its running statistics would differ from
    the one-worker run's (per-rank batches have other moments). Guard against a vacuous pass."""
    g = runs[1]["quickstart"]["G"]
    assert any(k.endswith("running_var") for k in g)
