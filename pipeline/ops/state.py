"""A schedule's state, kept in the MLflow tracking store (not in a local file a restarted pod loses).

One MLflow run per submission, in the experiment `ganpipe-schedules`: run name = submission id, tags
for the schedule, the data snapshot, the cron fire time it answered, the Ray job status last seen and,
once the job has ended, the promotion outcome. The run stays RUNNING until the outcome is recorded.
Each recorded decision is also one point of the metric `decision`, so "recorded once" is checkable.

MLflow has no unique keys, so two schedulers racing may both create a record for one submission:
`ensure` re-reads after creating and the earliest record wins; the others delete their own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.tracking import names

EXPERIMENT = "ganpipe-schedules"
# Tag keys of a schedule record (shared ones come from pipeline.tracking.names).
FIRE_TIME = "ganpipe.fire_time"
ATTEMPT = "ganpipe.attempt"
JOB_STATUS = "ganpipe.job_status"
OUTCOME = "ganpipe.outcome"
REASON = "ganpipe.reason"
MODEL_VERSION = "ganpipe.model_version"
CHAMPION = "ganpipe.champion"
PENDING = "ganpipe.pending"          # a gate call under way: the champion version before it
DECISION_METRIC = "decision"


@dataclass
class Record:
    run_id: str
    submission_id: str
    snapshot: str
    fire_time: str
    attempt: int
    created_ms: int
    tags: dict[str, str]

    @property
    def outcome(self) -> str | None:
        return self.tags.get(OUTCOME)

    @property
    def job_status(self) -> str:
        return self.tags.get(JOB_STATUS, "PENDING")


class ScheduleState:
    def __init__(self, tracking_uri: str, schedule: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri, self.schedule = tracking_uri, schedule
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(EXPERIMENT)
                except MlflowException:  # another scheduler created it first (names are unique)
                    self._experiment_id = self.client.get_experiment_by_name(EXPERIMENT).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def records(self, submission_id: str | None = None) -> list[Record]:
        """This schedule's records, newest first (one per submission id after dedup)."""
        query = f"tags.`{names.SCHEDULE}` = '{self.schedule}'"
        if submission_id:
            query += f" and tags.`{names.SUBMISSION_ID}` = '{submission_id}'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token,
                                           order_by=["attributes.start_time DESC"])
            runs.extend(page)
            token = page.token
            if not token:
                break
        return [_record(r) for r in runs]

    def ensure(self, submission_id: str, *, snapshot: str, fire_time: str, attempt: int) -> Record:
        """The record of a submission, created if none exists yet (idempotent, race-tolerant)."""
        existing = self.records(submission_id)
        if existing:
            return _oldest(existing)
        run = self.client.create_run(self.experiment_id, run_name=submission_id, tags={
            names.SCHEDULE: self.schedule, names.SUBMISSION_ID: submission_id, names.DATA_SHA256: snapshot,
            FIRE_TIME: fire_time, ATTEMPT: str(attempt), JOB_STATUS: "PENDING",
        })
        keeper = _oldest(self.records(submission_id))
        if keeper.run_id != run.info.run_id:
            self.client.delete_run(run.info.run_id)  # another scheduler recorded it first
        return keeper

    def set_status(self, record: Record, status: str) -> None:
        if record.tags.get(JOB_STATUS) != status:
            self.client.set_tag(record.run_id, JOB_STATUS, status)
            record.tags[JOB_STATUS] = status

    def mark_pending(self, record: Record, champion_before: str | None) -> None:
        self.client.set_tag(record.run_id, PENDING, champion_before or "none")
        record.tags[PENDING] = champion_before or "none"

    def decide(self, record: Record, *, outcome: str, reason: str, version: str | None = None, champion: str | None = None) -> None:
        """Record the outcome once: a record that has one is never written again."""
        tags = {OUTCOME: outcome, REASON: reason[:4000]}
        if version:
            tags[MODEL_VERSION] = version
        if champion:
            tags[CHAMPION] = champion
        for k, v in tags.items():
            self.client.set_tag(record.run_id, k, v)
        self.client.log_metric(record.run_id, DECISION_METRIC, 1.0, timestamp=int(time.time() * 1000))
        failed = outcome in ("failed", "stopped", "lost")
        self.client.set_terminated(record.run_id, "FAILED" if failed else "FINISHED")
        record.tags.update(tags)


def _record(run) -> Record:
    t = run.data.tags
    return Record(run.info.run_id, t.get(names.SUBMISSION_ID, ""), t.get(names.DATA_SHA256, ""), t.get(FIRE_TIME, ""),
                  int(t.get(ATTEMPT, "1")), run.info.start_time or 0, dict(t))


def _oldest(records: list[Record]) -> Record:
    return min(records, key=lambda r: (r.created_ms, r.run_id))
