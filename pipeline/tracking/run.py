"""The MLflow run's lifecycle, as the driver sees it: where the tracking store is, opening the run
(tags, the resolved spec as params and as `job.yaml`), and ending it with a status.

Workers never open runs: rank 0 logs into this one by id (run_logger.py).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import yaml

from pipeline.tracking import names

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The given URI, then $MLFLOW_TRACKING_URI, then a SQLite file in the working folder (made
    absolute, because Ray workers do not share the driver's working directory)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


class TrackingUnreachable(RuntimeError):
    """The tracking server does not answer: said at once, in one line, instead of after MLflow's
    minutes of retries and a traceback."""


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnreachable when an http(s) tracking server does not answer its /health probe
    within `timeout_s`. Any HTTP status counts as an answer (a proxy's 404, basic-auth's 401). A
    database URI has no server to probe: opening it reports its own errors."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as e:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {uri} is unreachable ({getattr(e, 'reason', e)}): start it, or point "
            "--tracking-uri / $MLFLOW_TRACKING_URI at one that runs") from None


def lineage_tags() -> dict[str, str]:
    """Where a run came from, as tags for the run and every version it registers: the project's
    git commit (when the code is a git checkout, or $GANPIPE_GIT_COMMIT says so) and the Ray Jobs
    submission id (when this driver runs inside a submitted job)."""
    tags = {}
    if commit := os.environ.get("GANPIPE_GIT_COMMIT") or git_commit(PROJECT_ROOT):
        tags[names.GIT_COMMIT] = commit
    if submission := submission_id():
        tags[names.SUBMISSION_ID] = submission
    return tags


def submission_id() -> str | None:
    """$GANPIPE_SUBMISSION_ID, else the id Ray gave the submitted job. Ray 2.60 sets no plain
    variable for it in the job's driver: the job supervisor passes the job config as JSON in
    $RAY_JOB_CONFIG_JSON_ENV_VAR, whose metadata holds `job_submission_id`."""
    if explicit := os.environ.get("GANPIPE_SUBMISSION_ID"):
        return explicit
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        return (config.get("metadata") or {}).get("job_submission_id") or None
    except (ValueError, AttributeError):
        return None


def git_commit(root: Path) -> str | None:
    """The commit checked out at `root` (clean or not), or None outside a git checkout."""
    import subprocess

    if not (root / ".git").exists():  # a Ray Jobs working_dir upload or an installed wheel: no checkout
        return None
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def flatten_params(prefix: str, value, out: dict) -> dict:
    """A nested spec as MLflow params: `optim.d.lr`, lists of sections indexed (`regularization.0.kind`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten_params(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            flatten_params(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def open_run(*, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str], resolved_spec: dict) -> str:
    """Create the run before any worker starts: tags (with lineage_tags()), the resolved spec as params and as `job.yaml`.
    Returns its id; workers log into it, the driver registers the generator from it at the end."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    tags = {**lineage_tags(), **tags}
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    params = [Param(k, str(v)) for k, v in flatten_params("", resolved_spec, {}).items()]
    for i in range(0, len(params), 100):  # MLflow's per-batch cap on params
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    client.log_text(run.info.run_id, yaml.safe_dump(resolved_spec, sort_keys=False), "job.yaml")
    return run.info.run_id


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """Mark the run FINISHED, FAILED or KILLED; an unreachable server is logged, not raised (the
    outcome is already in the checkpoint)."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status)
    except Exception as e:
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, e)
