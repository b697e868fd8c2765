"""The driver: check the data, open the MLflow run, run Ray Train's TorchTrainer, register G.

Everything that can fail cheaply (spec, shards, tracking store) fails here, before any worker starts.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from dataclasses import dataclass

from pipeline.checkpoints import generator_from_checkpoint, location, storage
from pipeline.spec import JobSpec, with_absolute_paths, with_classes
from pipeline.train.background import Background
from pipeline.tracking import names
from pipeline.tracking.run import check_reachable, end_run, open_run, resolve_tracking_uri

log = logging.getLogger(__name__)


class SchedulingError(RuntimeError):
    """The cluster cannot hold the job's worker group."""


@dataclass
class TrainOutcome:
    run_id: str
    run_name: str
    tracking_uri: str
    checkpoint_path: str
    model_version: str | None
    became_champion: bool
    model_uri: str | None


def init_ray(start_timeout_s: float) -> bool:
    """Connect to $RAY_ADDRESS or start a local Ray; True when this call did it (and so may stop it)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address=os.environ.get("RAY_ADDRESS"),  # unset: a local instance for this process
        logging_level=logging.ERROR,
        log_to_driver=os.environ.get("GANPIPE_RAY_LOGS") == "1",
        include_dashboard=False,
        configure_logging=True,
        # A request no cluster can satisfy must fail, not wait forever (docs/architecture.md): the Train
        # controller, an actor of this job, reads its worker-group start timeout from here.
        runtime_env={"env_vars": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(start_timeout_s)}},
    )
    return True


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the workers are stopped, the MLflow run is marked KILLED, and this
    says where a resume (`ganpipe train JOB --resume RUN`) would start."""

    def __init__(self, *, run_name: str, run_id: str, checkpoint_step: int | None, steps: int):
        super().__init__(run_name)
        self.run_name, self.run_id, self.checkpoint_step, self.steps = run_name, run_id, checkpoint_step, steps


def train(spec: JobSpec, *, run_name: str | None = None, resume: str | None = None, tracking_uri: str | None = None,
          show_progress: bool = True, record_keys: str | None = None) -> TrainOutcome:
    """Train `spec` as a new run (`run_name`, default unique), or continue the unfinished run `resume`:
    the same MLflow run and checkpoint folder, from its last registered checkpoint. `record_keys`: a
    folder where every rank writes the keys of the samples it trains on (audits, tests)."""
    from pipeline.data.manifest import check_shards, load_manifest
    from pipeline.train import runs
    from pipeline.train.startup import Timeline, process_started_at
    from pipeline.train.worker_config import WorkerConfig

    timeline = Timeline()
    timeline.set("driver_process", process_started_at())
    timeline.mark("driver_train")  # the interpreter, the CLI's imports and the spec are behind us
    spec = with_absolute_paths(spec)  # before it is hashed: a resume compares it after the same step
    check_shards(spec.data)  # missing or mismatched shards: a clear error before Ray starts
    manifest, manifest_sha = load_manifest(spec.data.root, spec.data.endpoint_url)
    spec = with_classes(spec, manifest)  # a conditional model's class count and names, from the data
    timeline.mark("data_checked")
    tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking.tracking_uri)
    check_reachable(tracking_uri)  # a server that is down: one line now, not minutes of MLflow retries
    # Ray starts while the driver opens the MLflow run and imports the trainer: a local Ray is seconds
    # of waiting for its processes, the run and the imports are seconds of the driver's own CPU, so
    # they overlap (started after the checks above, so a broken data set or store still takes no Ray).
    # Ray starts in this thread, the run in the other: Ray's processes die with the thread that
    # started them (PR_SET_PDEATHSIG follows the parent thread), so ray.init must not run in a thread
    # that ends.
    opening = Background(_open_run_and_import, spec, run_name=run_name, resume=resume, tracking_uri=tracking_uri,
                         manifest_sha=manifest_sha, timeline=timeline, name="open-run")
    try:
        started_ray = init_ray(spec.scaling.start_timeout_s)
    except BaseException:
        with contextlib.suppress(BaseException):  # Ray's own error is the one to report; the run fails with it
            run_name, run_id = opening.result()
            end_run(tracking_uri, run_id, "FAILED")
        raise
    timeline.mark("ray_ready")
    try:
        run_name, run_id = opening.result()
    except BaseException:
        _stop_ray(started_ray)  # the run could not open: leave no Ray of ours behind
        raise
    storage_path, fs = storage(spec.checkpoint.storage_path, spec.checkpoint.endpoint_url)
    worker_config = WorkerConfig(
        spec=spec.model_dump(mode="json"), tracking_uri=tracking_uri, run_id=run_id, manifest_sha256=manifest_sha,
        record_keys=record_keys,
    ).as_dict()
    try:
        result = _fit(spec, worker_config, run_name=run_name, storage_path=storage_path, fs=fs, show_progress=show_progress,
                      timeline=timeline)
    except KeyboardInterrupt:
        end_run(tracking_uri, run_id, "KILLED")
        _stop_ray(started_ray)  # our local Ray: stop it, and the workers with it, now rather than at exit
        raise TrainingInterrupted(run_name=run_name, run_id=run_id, steps=spec.train.steps,
                                  checkpoint_step=runs.last_checkpoint_step(spec, run_name)) from None
    except BaseException as e:
        end_run(tracking_uri, run_id, "FAILED")
        if _scheduling_failure(e):
            raise SchedulingError(_unschedulable(spec) or _busy(spec)) from e
        raise
    version, champion, model_uri = _publish(result, spec, run_id=run_id, tracking_uri=tracking_uri, manifest_sha=manifest_sha)
    end_run(tracking_uri, run_id, "FINISHED")
    return TrainOutcome(run_id, run_name, tracking_uri, result.checkpoint.path, version, champion, model_uri)


def _open_run_and_import(spec: JobSpec, *, timeline, **kwargs) -> tuple[str, str]:
    """_open_run, then build_trainer's imports (torch, Ray Train: seconds), while Ray starts."""
    opened = _open_run(spec, **kwargs)
    timeline.mark("run_open")
    importlib.import_module("ray.train.torch")
    timeline.mark("trainer_imported")
    return opened


def _open_run(spec: JobSpec, *, run_name: str | None, resume: str | None, tracking_uri: str,
              manifest_sha: str) -> tuple[str, str]:
    """(run name, MLflow run id): a new run, or the unfinished run `resume` marked RUNNING again."""
    from pipeline.train import runs

    if resume is not None:
        if run_name not in (None, resume):
            raise runs.ResumeError(f"--resume {resume} continues that run under its own name; drop --name {run_name}")
        return resume, runs.reopen(spec, tracking_uri, resume, manifest_sha=manifest_sha)
    run_name = run_name or runs.new_run_name(spec)
    if runs.run_folder_exists(spec, run_name):
        # Ray Train would silently continue that folder's last checkpoint under a new MLflow run.
        raise runs.ResumeError(
            f"run {run_name!r} already exists in {spec.checkpoint.storage_path}; continue it with "
            f"--resume {run_name}, or choose another --name"
        )
    run_id = open_run(
        tracking_uri=tracking_uri, experiment=spec.tracking.experiment, run_name=run_name,
        tags={names.JOB: spec.name, names.DATA_SHA256: manifest_sha, names.SPEC_SHA256: spec.sha256()},
        resolved_spec=spec.model_dump(mode="json"),
    )
    return run_name, run_id


def _stop_ray(started_here: bool) -> None:
    if started_here:
        import ray

        ray.shutdown()


def _scheduling_failure(error: BaseException) -> bool:
    """Whether Ray Train gave up because the worker group could not be placed (start-up timeout,
    resources the cluster lacks), rather than because training itself failed."""
    from ray.train.v2._internal.exceptions import InsufficientClusterResourcesError, WorkerGroupStartupTimeoutError

    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (WorkerGroupStartupTimeoutError, InsufficientClusterResourcesError)):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "controller_failure", None)]
    return False


def _busy(spec: JobSpec) -> str:
    """The shortfall message when the cluster is big enough but its resources were taken."""
    import ray

    s = spec.scaling
    return (
        f"scaling: {s.num_workers} workers × {dict(s.resources_per_worker)} did not start within "
        f"{s.start_timeout_s:.0f} s; the cluster has them in total but not free now (available: "
        f"{ray.available_resources()}); retry when other work ends, or raise scaling.start_timeout_s"
    )


def _publish(result, spec: JobSpec, *, run_id: str, tracking_uri: str, manifest_sha: str) -> tuple[str, bool, str]:
    """Log the final checkpoint's (EMA) generator into the run, register it with its tags and
    lineage, and run the job's promotion gate (tracking/publish.py). The checkpoint is already safe
    in storage, so an MLflow outage here is waited out for tracking.patience_s; after that the run
    ends with RegistrationPending, whose message is the `ganpipe register` command to finish later."""
    from pipeline.tracking.publish import publish

    with result.checkpoint.as_directory() as d:
        generator, meta = generator_from_checkpoint(d, spec)
    out = publish(
        generator, spec=spec, step=meta["step"], run_id=run_id, tracking_uri=tracking_uri, manifest_sha=manifest_sha,
        scores=result.metrics, checkpoint_path=location(result.checkpoint.path, result.checkpoint.filesystem),
    )
    return out.version, out.became_champion, out.model_uri


def _unschedulable(spec: JobSpec) -> str | None:
    """Why the worker group cannot fit in the cluster as it is, or None when it can."""
    import ray

    return shortfall(spec, [n["Resources"] for n in ray.nodes() if n.get("Alive")])


def shortfall(spec: JobSpec, nodes: list[dict[str, float]]) -> str | None:
    """Why `spec`'s worker group cannot be placed on nodes with these total resources, or None."""
    s = spec.scaling
    per_worker = dict(s.resources_per_worker)
    if s.use_gpu:
        per_worker.setdefault("GPU", 1)
    have = {k: sum(r.get(k, 0) for r in nodes) for k in per_worker}
    short = {k: v * s.num_workers for k, v in per_worker.items() if v * s.num_workers > have[k]}
    waited = f"waited {s.start_timeout_s:.0f} s"
    if short:
        has = {k: have[k] for k in short}
        return (
            f"scaling: {s.num_workers} workers × {per_worker} need {short}, the Ray cluster has {has}; lower "
            f"scaling.num_workers or scaling.resources_per_worker, or add nodes ({waited})"
        )
    # Enough in total is not enough: one worker's bundle must fit on one node, and strict_spread
    # wants a node of its own for every worker.
    fitting = sum(all(r.get(k, 0) >= v for k, v in per_worker.items()) for r in nodes)
    if s.placement == "strict_spread" and fitting < s.num_workers:
        return (
            f"scaling: placement strict_spread puts each of {s.num_workers} workers on its own node, so it needs "
            f"{s.num_workers} nodes with {per_worker} each; the Ray cluster has {fitting} (of {len(nodes)} nodes); "
            f"use scaling.placement pack or spread, fewer workers, or add nodes ({waited})"
        )
    if fitting == 0:
        return (
            f"scaling: one worker needs {per_worker} on a single node and none of the Ray cluster's "
            f"{len(nodes)} nodes has that much; lower scaling.resources_per_worker ({waited})"
        )
    return None


def _fit(spec: JobSpec, worker_config: dict, *, run_name, storage_path, fs, show_progress, timeline=None):
    from ray.util.queue import Queue

    from pipeline.train.progress import follow
    from pipeline.train.startup import Timeline
    from pipeline.train.trainer import build_trainer

    timeline = timeline or Timeline()
    progress = Queue(maxsize=10_000) if show_progress else None
    timeline.mark("progress_queue")  # an actor: a worker process of Ray's takes it
    timeline.mark("fit")  # Ray Train starts
    worker_config = {**worker_config, "progress": progress, "startup": timeline.marks}
    trainer = build_trainer(spec, worker_config, run_name=run_name, storage_path=storage_path, fs=fs)
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the driver's thread below
            box["error"] = e

    thread = threading.Thread(target=run, name="ray-train-fit", daemon=True)
    thread.start()
    follow(progress, total=spec.train.steps, alive=thread.is_alive, enabled=show_progress)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
