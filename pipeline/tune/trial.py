"""One trial of a search, as Tune runs it: a Ray Train run of the ordinary training code.

Tune calls `run_trial` (a function trainable) in a small actor per trial. It resolves the trial's
job, opens (or, on a restart, finds) the trial's child MLflow run, and fits the same TorchTrainer
`ganpipe train` fits, with Tune's TuneReportCallback: rank 0's report at every eval step (its
`eval/fd`, `eval/kid`, `step` and checkpoint path) becomes the trial's result, which the scheduler
judges. The Train run's folder is named after the trial, so a trial restarted by `--resume`
continues from its last checkpoint (Ray Train resumes an existing run folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the driver (pickled with the trainable)."""

    base_raw: dict[str, Any]    # the base job after `set`, local paths absolute
    source: str                 # the search file, for error messages
    search_id: str
    parent_run_id: str
    tracking_uri: str
    manifest_sha256: str


def trainable(ctx: TrialContext):
    """The function Tune runs per trial, with the stop behaviour mixed into Tune's wrapper class."""
    from functools import partial

    fn = partial(run_trial, ctx=ctx)
    fn.__mixins__ = (AbortTrainRunOnStop,)  # Tune's wrap_function puts these before FunctionTrainable
    return fn


def train_run_name(trial_id: str) -> str:
    return f"{trial_id}-train"


def train_storage(job, search_id: str) -> tuple[str, Any]:
    """(storage_path, filesystem) of the search's Train runs: the job's storage, under the search id."""
    from pipeline.checkpoints import storage

    path, fs = storage(job.checkpoint.storage_path, job.checkpoint.endpoint_url)
    return f"{path.rstrip('/')}/{search_id}", fs


# -- stopping a trial ---------------------------------------------------------------------------------
# When the scheduler stops a trial, Tune ends the trial's actor, and with it the Train controller that
# actor created; the worker group's placement group outlives them (it belongs to the job, and Ray
# Train's detached cleaner needs the dashboard's state API, which a local `ganpipe` Ray runs without),
# so its CPUs would stay taken and the next trials could never start. So the controller sends its own
# handle to the trial actor at start, and the trial's cleanup (Tune calls it when it stops the trial)
# aborts the run: workers stopped, placement group removed, checkpoints kept.
_mailbox: list = []  # in the trial actor's process: the Ray queue the controller's handle arrives on


def _controller_reporter(mailbox):
    """A Ray Train controller callback (internal API, Ray 2.60) that posts the controller's handle."""
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class PostControllerHandle(ControllerCallback):
        def after_controller_start(self, train_run_context) -> None:
            import ray

            mailbox.put(ray.get_runtime_context().current_actor)

    return PostControllerHandle()


class AbortTrainRunOnStop:
    """Mixed into Tune's trainable for run_trial (`__mixins__`): cleanup aborts the Train run."""

    def cleanup(self):
        import ray

        if _mailbox:
            try:
                controller = _mailbox[0].get(timeout=5)
                ray.get(controller.abort.remote(), timeout=60)
            except Exception:  # the run already ended (abort exits the controller: its call errors)
                pass
        super().cleanup()


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    import ray.tune
    from ray.train import TrainingFailedError
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.tracking.run import end_run
    from pipeline.train.trainer import build_trainer
    from pipeline.train.worker_config import WorkerConfig
    from pipeline.tune import tracking
    from pipeline.tune.spec import trial_job

    trial_id = ray.tune.get_context().get_trial_id()
    assignments = config["params"]
    job = trial_job(ctx.base_raw, assignments, ctx.source)  # validated by the driver already: cannot fail here
    run_id = tracking.trial_run(tracking_uri=ctx.tracking_uri, parent_run_id=ctx.parent_run_id, search_id=ctx.search_id,
                                trial_id=trial_id, job=job, manifest_sha=ctx.manifest_sha256, assignments=assignments)
    worker_config = WorkerConfig(spec=job.model_dump(mode="json"), tracking_uri=ctx.tracking_uri, run_id=run_id,
                                 manifest_sha256=ctx.manifest_sha256).as_dict()
    storage_path, fs = train_storage(job, ctx.search_id)
    from ray.util.queue import Queue

    _mailbox[:] = [Queue(maxsize=1, actor_options={"num_cpus": 0})]  # 0 CPUs: the workers hold them all
    trainer = build_trainer(job, worker_config, run_name=train_run_name(trial_id), storage_path=storage_path, fs=fs,
                            callbacks=[TuneReportCallback(), _controller_reporter(_mailbox[0])])
    try:
        trainer.fit()
    except TrainingFailedError:
        end_run(ctx.tracking_uri, run_id, "FAILED")
        raise
    end_run(ctx.tracking_uri, run_id, "FINISHED")
