"""The end of a search: the best trial, its job as a file `ganpipe train` takes as is, and its
generator registered (one version, tagged with the search and trial ids) or sent through the gate.

The best trial is the one with the lowest final score among the trials that ran to the end: a trial
the scheduler stopped was judged worse at some eval, and its generator is only partly trained.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.spec import JobSpec, PromoteSpec


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    state: str                  # done | stopped early | error | pending | running
    step: int | None            # the last reported step
    metric: float | None        # the last reported score
    run_id: str | None          # the child MLflow run
    checkpoint_path: str | None  # the last reported checkpoint (Ray's path, no scheme)
    scores: dict[str, float]    # the last result's eval/* metrics


def best_of(rows: list[TrialRow]) -> TrialRow | None:
    finished = [r for r in rows if r.state == "done" and r.metric is not None]
    return min(finished, key=lambda r: r.metric, default=None)


def results_csv(rows: list[TrialRow], params: list[str], metric: str) -> str:
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["trial_id", *params, "state", "last_step", metric, "run_id"])
    for r in rows:
        w.writerow([r.trial_id, *[r.params.get(p) for p in params], r.state, r.step, r.metric, r.run_id])
    return out.getvalue()


def best_job_yaml(job: JobSpec, *, search_id: str, row: TrialRow, metric: str) -> str:
    """The winner's resolved job, with a header saying where it came from."""
    values = ", ".join(f"{k}={v!r}" for k, v in row.params.items())
    header = (f"# Best trial of search {search_id}: trial {row.trial_id} ({values}), {metric} {row.metric:.6g}\n"
              f"# written {time.strftime('%Y-%m-%d %H:%M:%S')}; train it with: ganpipe train THIS_FILE\n")
    return header + yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


def write_best_job(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish_winner(job: JobSpec, row: TrialRow, *, action: str, promote: PromoteSpec, search_id: str,
                   tracking_uri: str, manifest_sha: str, storage_fs) -> Any:
    """Log the winner's (EMA) generator into its child run and register it (tracking/publish.py); with
    `promote`, through the gate. Idempotent: a resumed search reuses the version already registered."""
    from mlflow.tracking import MlflowClient
    from ray.train import Checkpoint

    from pipeline.checkpoints import generator_from_checkpoint, location
    from pipeline.tracking.publish import publish
    from pipeline.tune.tracking import SEARCH, TRIAL_ID

    tracking = job.tracking.model_copy(update={"promote": promote if action == "promote" else None})
    job = job.model_copy(update={"tracking": tracking})
    checkpoint = Checkpoint(row.checkpoint_path, filesystem=storage_fs)
    with checkpoint.as_directory() as d:
        generator, meta = generator_from_checkpoint(d, job)
    out = publish(generator, spec=job, step=meta["step"], run_id=row.run_id, tracking_uri=tracking_uri,
                  manifest_sha=manifest_sha, scores=row.scores, checkpoint_path=location(row.checkpoint_path, storage_fs))
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_model_version_tag(job.tracking.registered_model, out.version, SEARCH, search_id)
    client.set_model_version_tag(job.tracking.registered_model, out.version, TRIAL_ID, row.trial_id)
    return out
