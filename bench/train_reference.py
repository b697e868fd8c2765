"""The reference loops of bench/train.py: the quickstart's GAN step written out by hand.

No Ray, no GanStep, no ganpipe training code: only the pure maths of pipeline.gan (networks, losses,
penalties, EMA) and plain torch. Same model, losses, regularizers (L2 on D, lazy R1, EMA), Adam
settings and global batch as the job; the batches come from a tensor already in memory.

- `bare_loop`: one process, the whole global batch.
- `ddp_pair`: the same loop under plain torch DDP, 2 processes (gloo, torch.multiprocessing), each
  with half the global batch: the most two processes can do on this machine.
- `ray_pair`: the same DDP loop started by Ray Train's TorchTrainer with the job's scaling settings
  (workers, resources, placement, gloo) and nothing else of ganpipe's: no data stream, no metrics,
  no MLflow, no checkpoints. Ray's cost alone: its processes, its worker start, its process group.
All time windows of `window` steps with perf_counter and return the window lengths in seconds.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from pipeline.gan.ema import EMA
from pipeline.gan.losses import d_loss, g_loss
from pipeline.gan.models import build_models
from pipeline.gan.penalties import l2_penalty, lazy_adam, r1_penalty


@dataclass(frozen=True)
class Recipe:
    """The numbers of the job's model, loss, regularization and optimizers (read from its YAML)."""

    z_dim: int
    g_width: int
    d_width: int
    resolution: int
    g_norm: str
    d_dropout: float
    loss: str
    l2_d: float       # λ of the L2 penalty on D's weights
    r1_gamma: float
    r1_every: int     # lazy R1: its own D step every k steps, gain k, Adam adjusted
    ema_beta: float
    g_lr: float
    g_betas: tuple
    d_lr: float
    d_betas: tuple
    seed: int


def _step(G, D, g_plain, d_plain, g_opt, d_opt, ema, r: Recipe, step: int, real: torch.Tensor, n: int, global_batch: int) -> None:
    """One step as the quickstart runs it: D main (+ L2), D lazy R1 when due, G, EMA."""
    z_d, z_g = torch.randn(n, r.z_dim), torch.randn(n, r.z_dim)
    with torch.no_grad():
        fake = g_plain(z_d)  # no backward follows: the unwrapped G, so DDP expects none
    logits = D(torch.cat([real, fake]))
    loss = d_loss(r.loss, logits[:n], logits[n:]) + r.l2_d * l2_penalty(d_plain)
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    d_opt.step()
    if r.r1_every > 1 and step % r.r1_every == 0:
        pen, logits = r1_penalty(D, real)
        # γ/2 · R1 · gain; `logits * 0` makes every D parameter report so DDP's buckets fire.
        loss = pen * (r.r1_gamma / 2 * r.r1_every) + logits.sum() * 0
        d_opt.zero_grad(set_to_none=True)
        loss.backward()
        d_opt.step()
    d_plain.requires_grad_(False)
    logits = d_plain(G(z_g))
    loss = g_loss(r.loss, logits)
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    g_opt.step()
    d_plain.requires_grad_(True)
    ema.update(G, step=step, batch_size=global_batch)


@dataclass
class Parts:
    """G and D (DDP-wrapped when world > 1), their plain modules, optimizers and G's EMA."""

    G: torch.nn.Module
    D: torch.nn.Module
    g_plain: torch.nn.Module
    d_plain: torch.nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    ema: EMA

    def step(self, r: Recipe, step: int, real: torch.Tensor, n: int, global_batch: int) -> None:
        _step(self.G, self.D, self.g_plain, self.d_plain, self.g_opt, self.d_opt, self.ema, r, step, real, n, global_batch)


def parts(r: Recipe, *, world: int = 1, g_hook=None) -> Parts:
    """The job's networks and optimizers, seeded; `g_hook(g)` edits G before it is wrapped (a bench's variant)."""
    torch.manual_seed(r.seed)
    g_plain, d_plain = build_models(kind="dcgan", z_dim=r.z_dim, g_width=r.g_width, d_width=r.d_width,
                                    resolution=r.resolution, g_norm=r.g_norm, d_dropout=r.d_dropout)
    if g_hook is not None:
        g_hook(g_plain)
    G, D = g_plain, d_plain
    if world > 1:
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # as ganpipe's workers wrap them (worker.py); torch 2.13 warns that the name is deprecated
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")
        warnings.filterwarnings("ignore", message="Grad strides do not match")  # R1's double backward; ours too
        G, D = DDP(g_plain, broadcast_buffers=False), DDP(d_plain, broadcast_buffers=False)
    d_lr, d_betas = lazy_adam(r.d_lr, r.d_betas, r.r1_every)
    g_opt = torch.optim.Adam(g_plain.parameters(), lr=r.g_lr, betas=r.g_betas)
    d_opt = torch.optim.Adam(d_plain.parameters(), lr=d_lr, betas=d_betas)
    return Parts(G, D, g_plain, d_plain, g_opt, d_opt, EMA(g_plain, beta=r.ema_beta))


def _train(r: Recipe, images: torch.Tensor, *, steps: int, window: int, global_batch: int, rank: int = 0, world: int = 1) -> list[float]:
    p = parts(r, world=world)
    n = global_batch // world
    order = torch.Generator().manual_seed(r.seed)
    perm, at = torch.randperm(len(images), generator=order), 0
    windows, t0 = [], time.perf_counter()
    for step in range(steps):
        if at + global_batch > len(perm):  # a new epoch over the in-memory images
            perm, at = torch.randperm(len(images), generator=order), 0
        idx = perm[at + rank * n : at + (rank + 1) * n]
        at += global_batch
        p.step(r, step, images[idx], n, global_batch)
        if (step + 1) % window == 0:
            t1 = time.perf_counter()
            windows.append(t1 - t0)
            t0 = t1
    return windows


def bare_loop(r: Recipe, images: torch.Tensor, *, steps: int, window: int, global_batch: int) -> list[float]:
    torch.set_num_threads(1)
    return _train(r, images, steps=steps, window=window, global_batch=global_batch)


def _ddp_rank(rank: int, world: int, port: int, r: Recipe, images: torch.Tensor, steps: int, window: int, global_batch: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        windows = _train(r, images, steps=steps, window=window, global_batch=global_batch, rank=rank, world=world)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(windows, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: the process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_pair(r: Recipe, images: torch.Tensor, *, steps: int, window: int, global_batch: int, world: int = 2) -> list[float]:
    import torch.multiprocessing as mp

    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "windows.json")
        mp.spawn(_ddp_rank, args=(world, port, r, images, steps, window, global_batch, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


def _ray_worker(config: dict) -> None:
    """Ray Train's worker function: the (c2) loop, on the gloo process group TorchTrainer set up."""
    import ray.train

    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    windows = _train(config["recipe"], config["images"], steps=config["steps"], window=config["window"],
                     global_batch=config["global_batch"], rank=rank, world=world)
    if rank == 0:  # metrics reported without a checkpoint are not kept in Ray's Result: a file, as (c2)
        with open(config["out"], "w") as f:
            json.dump(windows, f)


def _ray_driver(scaling: dict, config: dict, storage: str) -> None:
    """In a fresh process, as `ganpipe train` runs: a local Ray started with ganpipe's ray.init options
    (no dashboard, no log forwarding), one TorchTrainer.fit, then Ray stopped."""
    import logging

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ray.init(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo}})  # workers import bench.train_reference
    try:
        TorchTrainer(
            _ray_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=scaling["num_workers"], use_gpu=scaling["use_gpu"],
                                         resources_per_worker=scaling["resources_per_worker"],
                                         placement_strategy=scaling["placement"].upper()),
            torch_config=TorchConfig(backend="nccl" if scaling["use_gpu"] else "gloo"),
            run_config=RunConfig(name="bench-ray-pair", storage_path=storage),
        ).fit()
    finally:
        ray.shutdown()


def ray_pair(r: Recipe, images: torch.Tensor, *, steps: int, window: int, global_batch: int, scaling: dict) -> list[float]:
    """The (c2) loop under Ray Train. `scaling`: the job's ScalingSpec as a dict (num_workers,
    use_gpu, resources_per_worker, placement, torch_threads)."""
    import multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "windows.json")
        config = dict(recipe=r, images=images, steps=steps, window=window, global_batch=global_batch, out=out,
                      threads=scaling["torch_threads"])
        env = {k: v for k, v in os.environ.items() if k == "RAY_ADDRESS"}
        os.environ.pop("RAY_ADDRESS", None)  # a local Ray of its own, as each ganpipe run in the bench
        try:
            proc = mp.get_context("spawn").Process(target=_ray_driver, args=(scaling, config, os.path.join(d, "ray")))
            proc.start()
            proc.join()
        finally:
            os.environ.update(env)
        if proc.exitcode != 0 or not os.path.exists(out):
            raise RuntimeError(f"the Ray-started DDP pair failed (exit code {proc.exitcode})")
        with open(out) as f:
            return json.load(f)


def recipe_from_job(spec) -> Recipe:
    """The numbers the reference loops need, from a validated JobSpec (only the quickstart's kinds)."""
    m, regs = spec.model, {r.kind: r for r in spec.regularization}
    if m.kind != "dcgan" or set(regs) - {"l2", "r1", "ema"} or regs["l2"].target != "discriminator":
        raise SystemExit("the reference loops know the quickstart's recipe only: dcgan, L2 on D, lazy R1, EMA")
    return Recipe(
        z_dim=m.z_dim, g_width=m.g_width, d_width=m.d_width, resolution=spec.data.resolution, g_norm=m.g_norm,
        d_dropout=m.d_dropout, loss=spec.loss.kind, l2_d=float(regs["l2"].weight), r1_gamma=float(regs["r1"].weight),
        r1_every=regs["r1"].every, ema_beta=regs["ema"].beta, g_lr=spec.optim.g.lr, g_betas=tuple(spec.optim.g.betas),
        d_lr=spec.optim.d.lr, d_betas=tuple(spec.optim.d.betas), seed=spec.train.seed,
    )


def describe(r: Recipe) -> str:
    return json.dumps(asdict(r))
