"""train_loop_per_worker: what each Ray Train worker runs, top to bottom.

build (models, DDP, optimizers, regularizers) → resume from ray.train.get_checkpoint() if any →
stream this rank's share of the data → step loop → every rank reports at checkpoint steps, rank 0
attaches the checkpoint and owns MLflow logging and progress.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint

from pipeline.data.stream import make_batches
from pipeline.eval.grid import grid_png
from pipeline.gan.augment import AdaController
from pipeline.gan.ema import EMA
from pipeline.gan.lecam import LeCamAnchors
from pipeline.gan.models import build_models
from pipeline.gan.penalties import lazy_adam
from pipeline.spec import JobSpec
from pipeline.train.loop import GanParts, GanStep, unwrap
from pipeline.train.regularization import Regularization
from pipeline.train.state import load_state, save_state

log = logging.getLogger(__name__)


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, returned on t's device. NCCL reduces CUDA tensors only, gloo CPU ones."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = t.detach().to(on, copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def _with_spectral_norm(module: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.utils.parametrizations import spectral_norm

    for layer in list(module.modules()):
        if isinstance(layer, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            spectral_norm(layer)
    return module


def build_networks(spec: JobSpec, regs: Regularization) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G, D) as the job describes them, spectral norm applied where the job asks for it."""
    m = spec.model
    G, D = build_models(
        kind=m.kind, z_dim=m.z_dim, g_width=m.g_width, d_width=m.d_width,
        resolution=spec.data.resolution, g_norm=m.g_norm, d_dropout=m.d_dropout,
    )
    sn = regs.spectral_norm_targets()
    G = _with_spectral_norm(G) if "generator" in sn else G
    D = _with_spectral_norm(D) if "discriminator" in sn else D
    return G, D


def build_parts(spec: JobSpec, regs: Regularization, device, wrap=None) -> GanParts:
    """Models, optimizers and stateful regularizers. `wrap` puts a module under DDP (default: Ray
    Train's prepare_model); the quality bench passes an identity to train in-process."""
    G, D = build_networks(spec, regs)
    ema_spec = regs.get("ema")
    ema = EMA(G, beta=ema_spec.beta, half_life_images=ema_spec.half_life_images, rampup=ema_spec.rampup) if ema_spec else None
    if ema is not None:
        ema.module.to(device)
    # Two DDP modules; buffers are not broadcast because G's BN statistics are per-rank by design and
    # a broadcast each forward would cost a collective per phase.
    ddp = {"broadcast_buffers": False}
    wrap = wrap or (lambda m: ray.train.torch.prepare_model(m, parallel_strategy_kwargs=ddp))
    G, D = wrap(G), wrap(D)
    g_adam, d_adam = spec.optim.g, spec.optim.d
    d_lr, d_betas = lazy_adam(d_adam.lr, d_adam.betas, regs.lazy_every)
    ada = None
    if (a := regs.get("adaptive_augment")) is not None:
        ada = AdaController(target=a.rt_target, adjust_images=a.adjust_images, interval=a.interval)
    lecam = None
    if (lc := regs.get("lecam")) is not None:
        lecam = LeCamAnchors(decay=lc.decay)
    return GanParts(
        G=G,
        D=D,
        g_opt=torch.optim.Adam(G.parameters(), lr=g_adam.lr, betas=g_adam.betas),
        d_opt=torch.optim.Adam(D.parameters(), lr=d_lr, betas=d_betas),
        ema=ema,
        ada=ada,
        lecam=lecam,
    )


def _state_of(parts: GanParts, step: int, positions: list, samples_seen: int) -> dict[str, Any]:
    state = {
        "step": step,
        "samples_seen": samples_seen,
        "G": unwrap(parts.G).state_dict(),
        "D": unwrap(parts.D).state_dict(),
        "g_opt": parts.g_opt.state_dict(),
        "d_opt": parts.d_opt.state_dict(),
        "data_positions": positions,
    }
    for name in ("ema", "ada", "lecam"):
        if getattr(parts, name) is not None:
            state[name] = getattr(parts, name).state_dict()
    return state


def _restore(parts: GanParts, state: dict[str, Any]) -> None:
    unwrap(parts.G).load_state_dict(state["G"])
    unwrap(parts.D).load_state_dict(state["D"])
    parts.g_opt.load_state_dict(state["g_opt"])
    parts.d_opt.load_state_dict(state["d_opt"])
    for name in ("ema", "ada", "lecam"):
        if getattr(parts, name) is not None and name in state:
            getattr(parts, name).load_state_dict(state[name])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(config["spec"])  # re-validated on the worker: one source of truth
    torch.set_num_threads(spec.scaling.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(spec.train.seed)  # identical initial weights on every rank (DDP also broadcasts)
    regs = Regularization.from_specs(spec.regularization)
    parts = build_parts(spec, regs, device)

    start, samples_seen, positions = 0, 0, None
    if (ckpt := ray.train.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            state = load_state(d)
        _restore(parts, state)
        start, samples_seen, positions = state["step"], state["samples_seen"], state["data_positions"]

    per = spec.per_worker_batch
    batches = make_batches(
        spec.data, rank=rank, world_size=world, batch_size=per, seed=spec.train.seed,
        position=positions[rank] if positions and rank < len(positions) else None,
    )
    bf16 = spec.scaling.precision == "bf16"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    step_fn = GanStep(
        parts, loss=spec.loss.kind, regs=regs, global_batch=spec.train.global_batch, z_dim=spec.model.z_dim,
        all_reduce=_all_reduce_sum, autocast=autocast,
        generator=torch.Generator(device=device).manual_seed(spec.train.seed * 7919 + rank + 1),
        rank=rank, seed=spec.train.seed,
    )
    logger = _rank0_logger(config) if rank == 0 else None
    if logger is not None and start:
        logger.log_metrics({"train/resumed_from_step": start}, step=start)
    scorer = _rank0_scorer(spec, config, device) if rank == 0 else None
    progress = config.get("progress")
    fixed_z = torch.randn(spec.tracking.grid_size, spec.model.z_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    t, window = spec.train, _Window()
    it = iter(batches)
    for step in range(start, t.steps):
        real, _ = next(it)
        stats = step_fn(step, real.to(device, non_blocking=True))
        samples_seen += t.global_batch
        window.add(stats)
        done = step + 1
        if done % t.log_every == 0 or done == t.steps:
            metrics = window.reduce(_all_reduce_sum, world)  # every rank: same collectives each log step
            metrics["samples_per_s"] = window.rate(t.global_batch)
            metrics["samples_seen"] = samples_seen
            metrics.update(_data_stats(batches, world))
            if logger is not None:
                logger.log_metrics(metrics, step=done)
            if progress is not None and rank == 0:
                _show_progress(progress, {"step": done, **metrics})
            window = _Window()
        if logger is not None and (done % t.sample_every == 0 or done == t.steps):
            logger.log_png(_sample_grid(parts, fixed_z), f"samples/step_{done:07d}.png")
        scores = {}
        if scorer is not None and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
            scores = _score(scorer, parts, spec.model.z_dim)
            logger.log_metrics(scores, step=done)
        if done % t.checkpoint_every == 0 or done == t.steps:
            _report(parts, done, samples_seen, batches, spec, rank, scores)
    if logger is not None:
        logger.close()


def _show_progress(queue, item: dict) -> None:
    """Best effort: a full queue or a gone driver (the run continues under Ray) must not stop training."""
    try:
        queue.put_nowait(item)
    except Exception:
        pass


def _rank0_logger(config: dict[str, Any]):
    from pipeline.tracking.run_logger import RunLogger

    return RunLogger(config["tracking_uri"], config["run_id"])


def _rank0_scorer(spec: JobSpec, config: dict[str, Any], device):
    if spec.eval is None:
        return None
    from pipeline.eval.scorer import GeneratorScorer

    return GeneratorScorer(spec.eval, spec.data, config["manifest_sha256"], device=device)


@contextlib.contextmanager
def _eval_generator(parts: GanParts):
    """The generator people get: the EMA copy when there is one, in eval mode for the duration."""
    g = parts.ema.module if parts.ema is not None else unwrap(parts.G)
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad():
            yield g
    finally:
        g.train(was_training)


def _sample_grid(parts: GanParts, z: torch.Tensor) -> bytes:
    with _eval_generator(parts) as g:
        return grid_png(g(z))


def _score(scorer, parts: GanParts, z_dim: int) -> dict[str, float]:
    with _eval_generator(parts) as g:
        result = scorer(g, z_dim)
    return {"eval/fd": result["fd"], "eval/kid": result["kid"]}


def _data_stats(batches, world: int) -> dict[str, float]:
    stats = batches.stats() if hasattr(batches, "stats") else {}
    counters = [float(stats.get(k, 0)) for k in ("corrupt_skipped", "samples")]
    summed = _all_reduce_sum(torch.tensor(counters, dtype=torch.float64)).tolist()
    return {"data/corrupt_skipped": summed[0], "data/samples_read": summed[1], "data/epoch": float(stats.get("epoch", 0))}


def _report(parts: GanParts, step: int, samples_seen: int, batches, spec: JobSpec, rank: int, scores: dict) -> None:
    """Every rank reports (report is a barrier); only rank 0 attaches the checkpoint."""
    position = batches.state()
    positions = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(positions, position)
    else:
        positions = [position]
    metrics = {"step": step, "samples_seen": samples_seen, **scores}  # rank 0's are kept with the checkpoint
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        save_state(d, _state_of(parts, step, positions, samples_seen), {"step": step, "job": spec.name, "spec_sha256": spec.sha256()})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))


class _Window:
    """Running sums of step stats between two log steps (tensors stay on device until then). Means are
    per key over the steps that produced it: a lazy penalty seen every 16th step averages its own values."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, stats: dict) -> None:
        # Sums stay tensors (on the GPU when training there): no host sync per step, one per log step.
        self.n += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v))
            self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self, all_reduce, world: int) -> dict[str, float]:
        keys = sorted(self.sums)
        means = torch.tensor([float(self.sums[k]) / self.counts[k] for k in keys], dtype=torch.float64)
        means = all_reduce(means) / world
        return dict(zip(keys, means.tolist()))

    def rate(self, global_batch: int) -> float:
        return self.n * global_batch / max(time.perf_counter() - self.t0, 1e-9)
