"""Scheduled retraining: one `tick` looks at the schedule's state, the data and the clock, and
submits at most one training job; `run` ticks in a loop.

A tick, in order:
1. reconcile: each recorded submission whose Ray job has ended gets its promotion policy applied
   and its outcome recorded, once (state.py);
2. refuse with one line when a run is still in flight (max_in_flight), when the data snapshot (the
   manifest's sha256) was already trained (trigger new-data), or when no cron time has passed since
   the last submission (not due);
3. submit, with a submission id derived from (schedule, snapshot[, attempt]) — or (schedule, fire
   time) for trigger always — so two ticks at once, a restarted scheduler or two racing schedulers
   compute the same id and Ray refuses every copy but one.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.ops import submit as ops_submit
from pipeline.ops.state import PENDING, Record, ScheduleState
from pipeline.tracking import names


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: Literal["gate", "manual"] = "gate"
    metric: str = "fd"
    min_improvement: float = Field(0.05, ge=0)
    max_memorization: float | None = None


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    cron: str
    timezone: str = "UTC"
    job: str = Field(description="job file; relative paths resolve against the working folder")
    set: tuple[str, ...] = Field((), description="overrides applied to the job, as --set")
    data: str = Field(description="the data location to watch (folder or s3://bucket/prefix); becomes data.root")
    trigger: Literal["new-data", "always"] = "new-data"
    promotion: Promotion = Promotion()
    max_in_flight: int = Field(1, ge=1)
    max_attempts: int = Field(2, ge=1, description="submissions per data snapshot when runs fail")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError("not a valid cron expression (5 fields: minute hour day month weekday)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone (use an IANA name such as UTC or Europe/Berlin)") from None
        return v

    def overrides(self) -> list[str]:
        return [*self.set, f"data.root={self.data}"]


def load_schedule(path: str | Path) -> ScheduleSpec:
    from pipeline.spec import SpecError, _describe

    try:
        raw = yaml.safe_load(Path(path).read_text())
        return ScheduleSpec.model_validate(raw)
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"cannot read schedule {path}: {e}") from None
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors(include_url=False)]
        raise SpecError(f"invalid schedule {path}:\n" + "\n".join(lines)) from None


def last_fire(spec: ScheduleSpec, now: dt.datetime) -> dt.datetime:
    from croniter import croniter

    return croniter(spec.cron, now.astimezone(ZoneInfo(spec.timezone))).get_prev(dt.datetime)


def next_fire(spec: ScheduleSpec, now: dt.datetime) -> dt.datetime:
    from croniter import croniter

    return croniter(spec.cron, now.astimezone(ZoneInfo(spec.timezone))).get_next(dt.datetime)


def submission_id_for(spec: ScheduleSpec, snapshot: str, attempt: int = 1, fire: dt.datetime | None = None) -> str:
    """The idempotency key. new-data: (schedule, snapshot[, attempt]); always: (schedule, fire time)."""
    if spec.trigger == "always":
        return f"{spec.name}-{fire.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%MZ')}"
    return f"{spec.name}-{snapshot[:16]}" + (f"-r{attempt}" if attempt > 1 else "")


@dataclass
class TickResult:
    submitted: str | None     # the submission id when this tick submitted a job
    message: str              # one line: what was done, or why nothing was


def tick(spec: ScheduleSpec, *, address: str | None, tracking_uri: str | None = None, now: dt.datetime | None = None,
         say: Callable[[str], None] = print, check_cluster: bool = False) -> TickResult:
    """One pass (see the module's docstring). `check_cluster`: before a submission, the check that
    `ganpipe submit` runs (ops/submit.check_cluster: the cluster's `python` has the project), so a
    scheduled job never uploads only to die on its first import."""
    from pipeline.data.manifest import load_manifest
    from pipeline.spec import load_job
    from pipeline.tracking.run import check_reachable, resolve_tracking_uri

    now = now or dt.datetime.now(dt.timezone.utc)
    job = load_job(spec.job, spec.overrides())  # a broken job file fails every tick loudly, before anything else
    tracking_uri = resolve_tracking_uri(tracking_uri or job.tracking.tracking_uri)
    check_reachable(tracking_uri)  # the state lives there: a server that is down is one line, not minutes of retries
    state = ScheduleState(tracking_uri, spec.name)
    jobs = ops_submit.client(address)
    records = state.records()
    for record in records:
        if record.outcome is None:
            reconcile(spec, job, state, jobs, record, say)

    in_flight = [r for r in records if r.outcome is None]
    if len(in_flight) >= spec.max_in_flight:
        ids = ", ".join(f"{r.submission_id} ({r.job_status})" for r in in_flight)
        return TickResult(None, f"nothing to do: a run still in flight: {ids}")

    _, snapshot = load_manifest(job.data.root, job.data.endpoint_url)
    attempt = 1
    if spec.trigger == "new-data":
        same = [r for r in records if r.snapshot == snapshot]
        good = [r for r in same if r.outcome not in ("failed", "stopped", "lost")]
        if good:
            return TickResult(None, f"nothing to do: no new data (snapshot {snapshot[:12]} trained by {good[0].submission_id})")
        if len(same) >= spec.max_attempts:
            return TickResult(None, f"nothing to do: snapshot {snapshot[:12]} failed {len(same)} times (max_attempts {spec.max_attempts})")
        attempt = len(same) + 1

    fire = last_fire(spec, now)
    latest = max((dt.datetime.fromisoformat(r.fire_time) for r in records if r.fire_time), default=None)
    if latest is not None and fire <= latest:
        return TickResult(None, f"nothing to do: not due (last run for {latest.isoformat()}, next at {next_fire(spec, now).isoformat()})")

    sub = build_submission(spec, snapshot, attempt=attempt, fire=fire, tracking_uri=tracking_uri)
    try:
        ops_submit.submit(sub, address, check=check_cluster)
        created = True
    except ops_submit.DuplicateSubmission:
        created = False  # submitted by a racing scheduler, or by this one before a restart
    state.ensure(sub.submission_id, snapshot=snapshot, fire_time=fire.isoformat(), attempt=attempt)
    if created:
        return TickResult(sub.submission_id, f"submitted {sub.submission_id} (snapshot {snapshot[:12]}, due {fire.isoformat()})")
    return TickResult(None, f"nothing to do: {sub.submission_id} was already submitted (another scheduler, or before a restart); recorded")


def build_submission(spec: ScheduleSpec, snapshot: str, *, attempt: int = 1, fire: dt.datetime | None = None,
                     tracking_uri: str | None = None) -> ops_submit.Submission:
    env = {ops_submit.SCHEDULE_ENV: spec.name}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return ops_submit.prepare(spec.job, spec.overrides(), submission_id=submission_id_for(spec, snapshot, attempt, fire),
                              extra_env=env, metadata={"schedule": spec.name, "data_snapshot": snapshot})


def reconcile(spec: ScheduleSpec, job, state: ScheduleState, jobs, record: Record, say: Callable[[str], None]) -> None:
    """Bring one open record up to date; when its job has ended, apply the promotion policy once."""
    try:
        status = str(jobs.get_job_status(record.submission_id).value)
    except RuntimeError:  # Ray has no such job (a cluster replaced since): it will never finish
        state.decide(record, outcome="lost", reason="the Ray cluster has no job with this id")
        say(f"{record.submission_id}: lost (the cluster does not know it)")
        return
    state.set_status(record, status)
    if status not in ops_submit.TERMINAL:
        return
    if status != "SUCCEEDED":
        state.decide(record, outcome=status.lower(), reason=f"Ray job {status}; see `ganpipe logs {record.submission_id}`")
        say(f"{record.submission_id}: {status.lower()}")
        return
    model = job.tracking.registered_model
    version = registered_version(state.client, model, job.tracking.experiment, record.submission_id)
    if version is None:
        state.decide(record, outcome="no-version", reason=f"the job succeeded but no version of {model} carries its run")
        say(f"{record.submission_id}: succeeded, no model version found")
        return
    outcome, reason, champion = apply_policy(spec.promotion, state, record, model, version)
    state.decide(record, outcome=outcome, reason=reason, version=version, champion=champion)
    say(f"{record.submission_id}: {model} v{version} {outcome}: {reason}")


def apply_policy(promotion: Promotion, state: ScheduleState, record: Record, model: str, version: str) -> tuple[str, str, str | None]:
    """(outcome, reason, champion after). The gate is called at most once per decision: a restart
    between the gate's alias move and the record finds the move done and records it instead."""
    champion = _champion(state.client, model)
    if promotion.policy == "manual":
        return "registered", "policy manual: registered, not promoted", champion
    try:
        from pipeline.tracking.gate import GateError, promote
    except ImportError:
        return "registered", "promotion gate not installed (pipeline.tracking.gate): registered only", champion
    if PENDING in record.tags and champion == version and record.tags[PENDING] != version:
        return "promoted", f"the gate promoted v{version} before a restart (champion was {record.tags[PENDING]})", champion
    state.mark_pending(record, champion)
    try:
        d = promote(model, version, metric=promotion.metric, min_improvement=promotion.min_improvement,
                    max_memorization=promotion.max_memorization, tracking_uri=state.tracking_uri)
    except GateError as e:
        return "gate-error", str(e), champion
    return d.outcome, d.reason, _champion(state.client, model)


def _champion(client, model: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, names.CHAMPION).version
    except MlflowException:
        return None


def registered_version(client, model: str, experiment: str, submission_id: str) -> str | None:
    """The version a submission registered: tagged with its submission id, or (lineage through the
    run) registered from the MLflow run named after it."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{model}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get(names.SUBMISSION_ID) == submission_id:
            return v.version
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{submission_id}'", max_results=5)
    run_ids = {r.info.run_id for r in runs}
    return next((v.version for v in versions if v.run_id in run_ids or v.tags.get(names.RUN_ID) in run_ids), None)
