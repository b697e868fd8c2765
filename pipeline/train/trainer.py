"""The Ray Train TorchTrainer for one job spec: what `ganpipe train` fits, and what each trial of a
search (`ganpipe tune`) fits inside its Tune trial.

One place builds it so that a trial trains exactly as a plain run does: the same worker function,
scaling, placement, failure policy, checkpoint retention and worker environment.
"""
from __future__ import annotations

from typing import Any, Sequence

from pipeline.spec import JobSpec

# Rank 0 buffers metrics through an MLflow outage (RunLogger), so its client should fail fast rather
# than block a training step in MLflow's default ~2-minute retry loop.
WORKER_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def build_trainer(spec: JobSpec, worker_config: dict[str, Any], *, run_name: str, storage_path: str, fs=None,
                  callbacks: Sequence[Any] = ()):
    """A TorchTrainer running train_loop_per_worker on `spec`'s scaling. `worker_config` is
    WorkerConfig.as_dict(); `(storage_path, run_name)` is the run's checkpoint folder (an existing one
    is resumed from its last checkpoint by Ray Train); `callbacks` are Ray Train UserCallbacks (a
    search passes Tune's TuneReportCallback)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.train.worker import train_loop_per_worker

    s = spec.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_config,
        scaling_config=ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=dict(s.resources_per_worker),
            placement_strategy=s.placement.upper(),  # PACK, SPREAD or STRICT_SPREAD: the worker group's placement group
        ),
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=fs,
            # Worker deaths are retried from the last checkpoint; a worker group that cannot be placed
            # (start timeout) fails the controller at once instead of retrying forever.
            failure_config=FailureConfig(max_failures=s.max_failures, controller_failure_limit=0),
            worker_runtime_env={"env_vars": dict(WORKER_ENV)},
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep),
            callbacks=list(callbacks) or None,
        ),
    )
