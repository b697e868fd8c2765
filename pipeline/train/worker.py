"""train_loop_per_worker: what each Ray Train worker runs, top to bottom (Ray glue and the loop).

build (train/build.py) → resume from ray.train.get_checkpoint() if any (train/state.py) → stream this
rank's share of the data → one GanStep per step (train/step.py) → at log steps one collective for the
metrics (train/dist.py) → at checkpoint steps every rank reports, rank 0 attaches the checkpoint.
Rank 0 also owns MLflow logging, sample grids, scoring and the progress queue.
"""
from __future__ import annotations

import time

_IMPORT_STARTED = time.time()  # the start-up timeline's "worker_import" (train/startup.py)

import contextlib  # noqa: E402  (the imports below are what the timeline measures)
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint

from pipeline.data.split import HeldOut
from pipeline.data.stream import make_batches
from pipeline.eval.grid import class_grid_labels, grid_png
from pipeline.spec import JobSpec
from pipeline.tracking import names
from pipeline.train import dist
from pipeline.train.build import batch_norm_sync, build_parts
from pipeline.train.regularization import Regularization
from pipeline.train.state import RankState, TrainState
from pipeline.train.step import GanParts, GanStep, unwrap
from pipeline.train.startup import Timeline, process_started_at
from pipeline.train.worker_config import WorkerConfig

log = logging.getLogger(__name__)
_IMPORTED = time.time()
# How long rank 0 waits, at a checkpoint, for a slow but answering tracking server to take the
# metrics logged so far (a known outage is not waited for: run_logger.RunLogger.wait_sent).
CHECKPOINT_SEND_WAIT_S = 30.0


def _ddp(module: torch.nn.Module) -> torch.nn.Module:
    # Two DDP modules (G, D). Buffers are not broadcast: G's BN running stats are the same on every
    # rank when batch norm is synced, per-rank by the job's choice otherwise, and a broadcast at each
    # forward would cost a collective per phase.
    return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": False})


def _resume_point() -> TrainState | None:
    if (ckpt := ray.train.get_checkpoint()) is None:
        return None
    with ckpt.as_directory() as d:
        return TrainState.load(d)


def train_loop_per_worker(raw_config: dict[str, Any]) -> None:
    config = WorkerConfig.from_dict(raw_config)
    timeline = Timeline(config.startup)
    timeline.set("worker_process", process_started_at())
    timeline.set("worker_import", _IMPORT_STARTED)
    timeline.set("worker_imported", _IMPORTED)
    timeline.mark("loop")
    spec = JobSpec.model_validate(config.spec)  # re-validated on the worker: one source of truth
    torch.set_num_threads(spec.scaling.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if spec.model.conditional and spec.model.num_classes is None:
        raise ValueError("model.conditional: the driver fills model.num_classes from the manifest (spec.with_classes)")
    torch.manual_seed(spec.train.seed)  # identical initial weights on every rank (DDP also broadcasts)
    regs = Regularization.from_specs(spec.regularization)
    backend = torch.distributed.get_backend() if dist.initialized() else "gloo"
    parts = build_parts(
        spec.model, spec.optim, resolution=spec.data.resolution, regs=regs, device=device, wrap=_ddp,
        batch_norm_sync=batch_norm_sync(spec.model, world_size=world, backend=backend, all_reduce=dist.all_reduce_sum),
    )
    start, mine = 0, RankState(data_position=None, consumed=0)
    if (saved := _resume_point()) is not None:
        saved.restore(parts, device=device)
        mine = saved.for_rank(rank, world)
        saved.apply_rank(mine, parts, device=device)
        start = saved.step
    timeline.mark("built")

    batches = make_batches(
        spec.data, rank=rank, world_size=world, batch_size=spec.per_worker_batch, seed=spec.train.seed,
        position=mine.data_position, with_keys=config.record_keys is not None, heldout=heldout_split(spec),
    )
    bf16 = spec.scaling.precision == "bf16"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    step_fn = GanStep(
        parts, loss=spec.loss.kind, regs=regs, global_batch=spec.train.global_batch, z_dim=spec.model.z_dim,
        all_reduce=dist.all_reduce_sum, autocast=autocast, rank=rank, seed=spec.train.seed, optim=spec.optim,
        class_strength=spec.model.class_strength,
    )
    logger = scorer = None
    # Steps up to here are in MLflow already (a resumed run): not sent twice. The step metrics and
    # the scores are logged by separate calls (an eval takes seconds), so each has its own mark.
    logged_through = {names.SAMPLES_SEEN: 0, names.EVAL_FD: 0}
    if rank == 0:
        logger = _rank0_logger(config, spec)
        scorer = _rank0_scorer(spec, config, device)
        if start:
            logged_through = _logged_through(config, logged_through)
            logger.log_metrics({names.RESUMED_FROM_STEP: start}, step=start)
    timeline.mark("rank0_ready")
    recorder = _KeyRecorder(config.record_keys, rank, start) if config.record_keys else None
    grid = _fixed_grid(spec, device)
    t, window = spec.train, dist.MetricsWindow()
    consumed = mine.consumed
    startup_logged = False
    mine.restore_rng(device)  # last: building and the scorer may have drawn from the global RNG
    it = iter(batches)
    for step in range(start, t.steps):
        real, labels, *keys = next(it)
        timeline.mark("first_batch")  # only the first mark of a name is kept
        consumed += len(real)  # samples seen are counted from batches taken, not step × batch
        if recorder is not None:
            recorder.write(step, keys[0])
        labels = labels.to(device, non_blocking=True) if spec.model.conditional else None
        stats = step_fn(step, real.to(device, non_blocking=True), labels)
        timeline.mark("first_step")
        window.add(stats)
        done = step + 1
        fresh = done > logged_through[names.SAMPLES_SEEN]
        if done % t.log_every == 0 or done == t.steps:
            metrics = _log_step_metrics(window, batches, world, consumed, t.global_batch)
            if logger is not None and fresh:
                logger.log_metrics(metrics, step=done)
                _show_progress(config.progress, {"step": done, **metrics})
                if not startup_logged:  # once: the run's start-up, split into its parts
                    timeline.mark("first_log")
                    logger.log_metrics(timeline.as_metrics(), step=done)
                    startup_logged = True
            window = dist.MetricsWindow()
        if logger is not None and fresh and (done % t.sample_every == 0 or done == t.steps):
            logger.log_png(_sample_grid(parts, grid), f"samples/step_{done:07d}.png")
        scores = {}
        if scorer is not None and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
            scores = _score(scorer, parts, spec.model)
            if done > logged_through[names.EVAL_FD]:
                logger.log_metrics(scores, step=done)
        if done % t.checkpoint_every == 0 or done == t.steps:
            if logger is not None:
                # A checkpoint must imply its steps' metrics are stored: a driver killed after it
                # would otherwise take the unsent ones along, and the resumed run starts past them.
                logger.wait_sent(CHECKPOINT_SEND_WAIT_S)
            _report(parts, done, batches, consumed, spec, rank, device, scores)
    if recorder is not None:
        recorder.close()
    if logger is not None:
        logger.close()


def _log_step_metrics(window: dist.MetricsWindow, batches, world: int, consumed: int, global_batch: int) -> dict[str, float]:
    """Every rank, every log step: one collective for the means and the totals."""
    stats = batches.stats() if hasattr(batches, "stats") else {}
    totals = {
        names.SAMPLES_SEEN: consumed,
        "data/corrupt_skipped": stats.get("corrupt_skipped", 0),
        "data/heldout_skipped": stats.get("heldout_skipped", 0),
        "data/upscaled": stats.get("upscaled", 0),
        "data/samples_read": stats.get("samples", 0),
    }
    metrics = window.reduce(dist.all_reduce_sum, world, totals=totals)
    metrics[names.SAMPLES_PER_S] = window.rate(global_batch)
    metrics["data/epoch"] = float(stats.get("epoch", 0))
    return metrics


def _report(parts: GanParts, step: int, batches, consumed: int, spec: JobSpec, rank: int, device, scores: dict) -> None:
    """Every rank reports (report is a barrier); only rank 0 attaches the checkpoint, holding every
    rank's own state (gathered here: data position, sample count, RNG)."""
    mine = RankState.capture(data_position=batches.state(), consumed=consumed, parts=parts, device=device)
    ranks = dist.all_gather_objects(mine)
    metrics = {"step": step, names.SAMPLES_SEEN: sum(r.consumed for r in ranks), **scores}  # kept with the checkpoint
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        TrainState.capture(parts, step=step, ranks=ranks).save(d, {"job": spec.name, "spec_sha256": spec.sha256()})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))


def _logged_through(config: WorkerConfig, keys: dict[str, int]) -> dict[str, int]:
    """For each key standing for a group of metrics logged together, the last step MLflow held
    before this (re)start. The sender keeps order, so MLflow holds a prefix of each group's steps.
    0 when unknown."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.tracking_uri)
    try:
        return {key: max((int(m.step) for m in client.get_metric_history(config.run_id, key)), default=0) for key in keys}
    except Exception as e:  # an outage: log again rather than stall; duplicates are the lesser harm
        log.warning("could not read the run's metric history (%s); steps since the checkpoint may be logged twice", e)
        return dict(keys)


class _KeyRecorder:
    """Appends "<resumed from> <step> <key>" for every sample this rank consumes, one file per rank:
    which samples each step trained on, across restarts (the latest `resumed from` for a step wins)."""

    def __init__(self, folder: str, rank: int, start: int):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.file = open(Path(folder) / f"rank{rank}.txt", "a")
        self.start = start

    def write(self, step: int, keys) -> None:
        self.file.write("".join(f"{self.start} {step} {k}\n" for k in keys))
        self.file.flush()  # a SIGKILL must not lose the lines of steps that a checkpoint covers

    def close(self) -> None:
        self.file.close()


def _show_progress(queue, item: dict) -> None:
    """Best effort: a full queue or a gone driver (the run continues under Ray) must not stop training."""
    if queue is None:
        return
    try:
        queue.put_nowait(item)
    except Exception:
        pass


def _rank0_logger(config: WorkerConfig, spec: JobSpec):
    from pipeline.tracking.run_logger import RunLogger

    return RunLogger(config.tracking_uri, config.run_id, patience_s=spec.tracking.patience_s)


def heldout_split(spec: JobSpec) -> HeldOut | None:
    """The real samples this job's memorization share holds out, which training must then never read
    (so a generator that copies what it saw scores ~1, not 0.9): when the job evaluates (`eval`) or
    goes through the gate (`tracking.promote`, which scores with `eval` or its defaults, as
    tracking/scoring.py does). None otherwise: nothing scores memorization against this run's split."""
    if spec.eval is None and spec.tracking.promote is None:
        return None
    from pipeline.eval.config import EvalSpec
    from pipeline.eval.scorer import MAX_REAL

    return HeldOut((spec.eval or EvalSpec()).heldout_fraction, within=MAX_REAL)


def _rank0_scorer(spec: JobSpec, config: WorkerConfig, device):
    if spec.eval is None:
        return None
    from pipeline.eval.scorer import GeneratorScorer

    names_ = list(spec.model.class_names) if spec.model.conditional else None
    return GeneratorScorer(spec.eval, spec.data, config.manifest_sha256, device=device, class_names=names_)


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


GRID_PER_CLASS = 8  # samples in each class's row of a conditional run's grids


def _fixed_grid(spec: JobSpec, device) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """(z, labels, nrow) of the run's sample grids, the same at every step: one row per class for a
    conditional model, a square of tracking.grid_size samples otherwise."""
    rng = torch.Generator().manual_seed(1234)
    if not spec.model.conditional:
        return torch.randn(spec.tracking.grid_size, spec.model.z_dim, generator=rng).to(device), None, None
    labels = class_grid_labels(spec.model.num_classes, per_class=GRID_PER_CLASS)
    z = torch.randn(len(labels), spec.model.z_dim, generator=rng)
    return z.to(device), labels.to(device), GRID_PER_CLASS


def _sample_grid(parts: GanParts, grid) -> bytes:
    z, labels, nrow = grid
    with _eval_generator(parts) as g:
        return grid_png(g(z) if labels is None else g(z, labels), nrow=nrow)


_SCORE_NAMES = {
    "fd": names.EVAL_FD, "kid": names.EVAL_KID, "precision": names.EVAL_PRECISION,
    "recall": names.EVAL_RECALL, "memorization": names.EVAL_MEMORIZATION, "accuracy": names.EVAL_ACCURACY,
}


def _score(scorer, parts: GanParts, model) -> dict[str, float]:
    with _eval_generator(parts) as g:
        result = scorer(g, model.z_dim)
    return score_metrics(result)


def score_metrics(result: dict) -> dict[str, float]:
    """evaluate()'s result as MLflow metrics: the overall scores, and class by class when conditional."""
    out = {name: float(result[key]) for key, name in _SCORE_NAMES.items() if result.get(key) is not None}
    for class_name, row in (result.get("per_class") or {}).items():
        out.update({names.eval_class_metric(class_name, k): float(row[k]) for k in ("fd", "accuracy") if row[k] is not None})
    return out
