"""A search in MLflow: one parent run for the search, one nested child run per trial.

The parent holds the search file, the results table and the winner; each child is an ordinary
training run (the resolved job as params and `job.yaml`, rank 0's metrics) with the trial's
searched values as `tune.<path>` params. Runs are found again by tags, never by remembered ids, so a
resumed search (or a restarted trial) reopens the same runs instead of making new ones.
"""
from __future__ import annotations

import json
import time
from typing import Any

import yaml

from pipeline.tracking import names
from pipeline.tracking.run import end_run, flatten_params, open_run

# The search's tag names live with every other name (re-exported here for the search's own modules).
from pipeline.tracking.names import (  # noqa: E402,F401
    BEST_RUN_ID, BEST_TRIAL_ID, PARENT_RUN_ID, ROLE, SEARCH, SEARCH_NAME, SEARCH_SHA256, STOPPED_EARLY,
    TRIAL_ID, TRIAL_STARTS, TUNE_PARAM_PREFIX as PARAM_PREFIX,
)


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, experiment: str) -> str | None:
    exp = client.get_experiment_by_name(experiment)
    return exp.experiment_id if exp else None


def open_parent(*, tracking_uri: str, experiment: str, search_id: str, search, manifest_sha: str) -> str:
    """The search's parent run: its settings as params, the search file and base job as artifacts."""
    from mlflow.entities import Param

    spec = search.spec
    tags = {SEARCH: search_id, SEARCH_NAME: spec.name, SEARCH_SHA256: search.sha256(), ROLE: "parent",
            names.DATA_SHA256: manifest_sha, names.JOB: search.base_job().name}
    settings = spec.model_dump(mode="json", exclude={"space", "set"})
    run_id = open_run(tracking_uri=tracking_uri, experiment=experiment, run_name=search_id, tags=tags,
                      resolved_spec={"search": settings})
    client = _client(tracking_uri)
    params = [Param(f"space.{path}", json.dumps(d.model_dump(exclude_none=True))) for path, d in spec.space.items()]
    params += [Param("search.num_trials", str(len(search.trials)))]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False), "search.yaml")
    client.log_text(run_id, yaml.safe_dump(search.base_raw, sort_keys=False), "base_job.yaml")
    return run_id


def unfinished_parent(*, tracking_uri: str, experiment: str, search_name: str):
    """The newest parent run of this search name that did not finish, or None."""
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    runs = client.search_runs([exp_id], f"tags.`{SEARCH_NAME}` = '{search_name}' and tags.`{ROLE}` = 'parent'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    return next((r for r in runs if r.info.status != "FINISHED"), None)


def reopen(tracking_uri: str, run_id: str) -> None:
    _client(tracking_uri).update_run(run_id, status="RUNNING")


def find_trial_run(*, tracking_uri: str, experiment: str, search_id: str, trial_id: str):
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    found = client.search_runs([exp_id], f"tags.`{SEARCH}` = '{search_id}' and tags.`{TRIAL_ID}` = '{trial_id}'", max_results=2)
    return found[0] if found else None


def trial_run(*, tracking_uri: str, parent_run_id: str, search_id: str, trial_id: str, job, manifest_sha: str,
              assignments: dict[str, Any]) -> str:
    """The trial's child run: found again when the trial restarts (resume), else opened."""
    from mlflow.entities import Param

    experiment = job.tracking.experiment
    found = find_trial_run(tracking_uri=tracking_uri, experiment=experiment, search_id=search_id, trial_id=trial_id)
    if found is not None:
        client = _client(tracking_uri)
        client.set_tag(found.info.run_id, TRIAL_STARTS, str(int(found.data.tags.get(TRIAL_STARTS, "1")) + 1))
        reopen(tracking_uri, found.info.run_id)
        return found.info.run_id
    tags = {PARENT_RUN_ID: parent_run_id, SEARCH: search_id, TRIAL_ID: trial_id, ROLE: "trial", TRIAL_STARTS: "1",
            names.JOB: job.name, names.DATA_SHA256: manifest_sha, names.SPEC_SHA256: job.sha256()}
    run_id = open_run(tracking_uri=tracking_uri, experiment=experiment, run_name=f"{search_id}-{trial_id}", tags=tags,
                      resolved_spec=job.model_dump(mode="json"))
    searched = flatten_params("", {f"{PARAM_PREFIX}{p}": v for p, v in assignments.items()}, {})
    _client(tracking_uri).log_batch(run_id, params=[Param(k, str(v)) for k, v in searched.items()])
    return run_id


def close_trial(*, tracking_uri: str, experiment: str, search_id: str, trial_id: str, status: str,
                stopped_early: bool | None = None) -> str | None:
    """Mark the trial's child run ended (the driver does it: a stopped trial's process is gone)."""
    run = find_trial_run(tracking_uri=tracking_uri, experiment=experiment, search_id=search_id, trial_id=trial_id)
    if run is None:
        return None
    if stopped_early is not None:
        _client(tracking_uri).set_tag(run.info.run_id, STOPPED_EARLY, str(stopped_early).lower())
    end_run(tracking_uri, run.info.run_id, status)
    return run.info.run_id


def trial_runs(*, tracking_uri: str, experiment: str, search_id: str) -> dict[str, Any]:
    """trial id → child run, for the results table."""
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return {}
    runs = client.search_runs([exp_id], f"tags.`{SEARCH}` = '{search_id}' and tags.`{ROLE}` = 'trial'", max_results=10_000)
    return {r.data.tags[TRIAL_ID]: r for r in runs}


def record_results(*, tracking_uri: str, parent_run_id: str, table_csv: str, best: dict | None, best_job_yaml: str | None,
                   metric: str) -> None:
    """The results table (and the winner) on the parent run."""
    client = _client(tracking_uri)
    client.log_text(parent_run_id, table_csv, "results.csv")
    if best is not None:
        client.set_tag(parent_run_id, BEST_TRIAL_ID, best["trial_id"])
        if best.get("run_id"):
            client.set_tag(parent_run_id, BEST_RUN_ID, best["run_id"])
        client.log_metric(parent_run_id, f"best/{metric}", float(best["metric"]), timestamp=int(time.time() * 1000))
        if best_job_yaml is not None:
            client.log_text(parent_run_id, best_job_yaml, "best_job.yaml")
