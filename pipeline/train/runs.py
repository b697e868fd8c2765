"""Runs that can be resumed: the MLflow run behind a run name, and the last checkpoint Ray registered.

A run is one (storage_path, run name) folder of checkpoints plus one MLflow run of that name in the
job's experiment, opened by the driver. A driver that died (closed laptop, restarted head node) or
was interrupted leaves both behind: `ganpipe train JOB --resume NAME` reopens the same MLflow run and
lets Ray Train load the folder's last registered checkpoint; `ganpipe runs JOB` lists candidates.
The last checkpoint is read from Ray's own record (checkpoint_manager_snapshot.json), the one that
`ray.train.get_checkpoint()` will return, not from whichever folders happen to exist.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from pipeline.checkpoints import storage_root
from pipeline.spec import JobSpec
from pipeline.tracking import names

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # written by Ray Train's checkpoint manager
MLFLOW_RUN_NAME = "mlflow.runName"


class ResumeError(RuntimeError):
    """A --resume (or --name) that cannot be honoured; the message says why and what to do."""


@dataclass(frozen=True)
class RunRecord:
    run_name: str
    run_id: str
    status: str           # MLflow's: RUNNING (driver alive, or died without a word), KILLED, FAILED, FINISHED
    started: str          # local time, for people
    checkpoint_step: int | None
    steps: int | None     # the configured step count, from the run's params


def new_run_name(spec: JobSpec) -> str:
    """Unique by construction (time and 16 random bits): Ray resumes any existing (storage, name) pair."""
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# -- storage -------------------------------------------------------------------------------------------
def _run_path(spec: JobSpec, run_name: str) -> tuple[str, object]:
    """(path, pyarrow filesystem) of the run's folder, local or S3."""
    path, fs = storage_root(spec.checkpoint.storage_path, spec.checkpoint.endpoint_url)
    return f"{path}/{run_name}", fs


def run_folder_exists(spec: JobSpec, run_name: str) -> bool:
    import pyarrow.fs

    path, fs = _run_path(spec, run_name)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def last_checkpoint_step(spec: JobSpec, run_name: str) -> int | None:
    """The step of the checkpoint a resume starts from, or None when Ray registered none."""
    path, fs = _run_path(spec, run_name)
    try:
        with fs.open_input_stream(f"{path}/{SNAPSHOT_FILE}") as f:
            snapshot = json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return None
    latest = snapshot.get("latest_checkpoint_result") or {}
    step = (latest.get("metrics") or {}).get("step")
    return int(step) if step is not None else None


# -- MLflow ----------------------------------------------------------------------------------------------
def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _job_runs(spec: JobSpec, tracking_uri: str, extra: str = "") -> list:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(spec.tracking.experiment)
    if exp is None:
        return []
    query = f"tags.`{names.JOB}` = '{spec.name}'" + (f" and {extra}" if extra else "")
    return client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1000)


def list_runs(spec: JobSpec, tracking_uri: str, *, include_finished: bool = False) -> list[RunRecord]:
    """The job's runs, newest first; only those that can be resumed unless include_finished."""
    out = []
    for run in _job_runs(spec, tracking_uri):
        if run.info.status == "FINISHED" and not include_finished:
            continue
        name = run.data.tags.get(MLFLOW_RUN_NAME, run.info.run_name)
        steps = run.data.params.get("train.steps")
        out.append(RunRecord(
            run_name=name, run_id=run.info.run_id, status=run.info.status,
            started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000)),
            checkpoint_step=last_checkpoint_step(spec, name), steps=int(steps) if steps else None,
        ))
    return out


def reopen(spec: JobSpec, tracking_uri: str, run_name: str, *, manifest_sha: str) -> str:
    """The MLflow run id of `run_name`, checked to be this job's, unfinished and on the same spec and
    data, and marked RUNNING again. Raises ResumeError otherwise, before any Ray resource is taken."""
    found = [r for r in _job_runs(spec, tracking_uri, f"tags.`{MLFLOW_RUN_NAME}` = '{run_name}'")]
    if not found:
        known = ", ".join(r.run_name for r in list_runs(spec, tracking_uri)) or "none"
        raise ResumeError(
            f"--resume {run_name}: no run of that name for job {spec.name!r} in MLflow experiment "
            f"{spec.tracking.experiment!r} at {tracking_uri}; resumable runs: {known} (see `ganpipe runs`)"
        )
    if len(found) > 1:
        raise ResumeError(f"--resume {run_name}: {len(found)} MLflow runs carry that name; resume is ambiguous")
    run = found[0]
    if run.info.status == "FINISHED":
        raise ResumeError(f"--resume {run_name}: that run finished (MLflow run {run.info.run_id}); nothing to resume")
    for tag, mine, what in ((names.SPEC_SHA256, spec.sha256(), "job spec"), (names.DATA_SHA256, manifest_sha, "data snapshot (manifest)")):
        theirs = run.data.tags.get(tag)
        if theirs is not None and theirs != mine:
            raise ResumeError(
                f"--resume {run_name}: the {what} differs from the run's ({tag} {theirs[:12]}… vs {mine[:12]}…); "
                "resume with the same job file, --set options and data, or start a new run"
            )
    _client(tracking_uri).update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id
