"""Cluster verbs: `ganpipe submit/status/logs/stop/jobs` (Ray Jobs API) and `ganpipe schedule
tick/run/status` (scheduled retraining). Mounted on the main app by `register(app)`."""
from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Column, Table

from pipeline.cli_common import fail

console = Console(soft_wrap=True)
err = Console(stderr=True)
ADDRESS_HELP = "Ray dashboard / Jobs API address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS, else http://127.0.0.1:8265)."
schedule_app = typer.Typer(help="Scheduled retraining: tick (one pass, for cron), run (loop), status.", no_args_is_help=True)



def _jobs(address: Optional[str]):
    from pipeline.ops.submit import SubmitError, client

    try:
        return client(address)
    except SubmitError as e:
        fail(str(e))


def submit(
    job: Path = typer.Argument(..., metavar="FILE", help="Job spec YAML (see jobs/), or a search file (jobs/searches/) to run `ganpipe tune` on the cluster."),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    set_: List[str] = typer.Option([], "--set", help="Override a field: --set train.steps=50 (repeatable; for a search, a field of its base job)."),
    name: Optional[str] = typer.Option(None, help="Submission id (also the Ray Train and MLflow run name; a search's id); default NAME-TIME-RANDOM."),
    wait: bool = typer.Option(False, "--wait", help="Follow the logs and exit with the job's outcome (0 on success)."),
    check_cluster: bool = typer.Option(True, "--check-cluster/--no-check-cluster",
                                       help="First run a seconds-long check job: the cluster's `python` must have the project's dependencies (and the same ganpipe version, when installed there)."),
) -> None:
    """Validate a job (or every trial of a search) and its data here, check that the cluster's `python`
    can run it, then submit it to a Ray cluster through the Jobs API."""
    from pipeline.data.errors import DataError
    from pipeline.ops import submit as ops
    from pipeline.spec import SpecError
    from pipeline.tune.spec import SearchError

    try:
        if ops.is_search_file(job):
            sub = ops.prepare_search(job, set_, submission_id=name)
        else:
            sub = ops.prepare(job, set_, submission_id=name)
    except (SpecError, SearchError, DataError, ops.SubmitError) as e:
        fail(str(e))
    for warning in sub.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    try:
        sid = ops.submit(sub, address, check=check_cluster)
    except ops.SubmitError as e:
        fail(str(e))
    console.print(f"submitted [bold]{sid}[/]  (run name {sid})", highlight=False)
    console.print(f"  dashboard  {ops.dashboard_job_url(address, sid)}", highlight=False)
    console.print(f"  follow     ganpipe logs {sid} --follow", highlight=False)
    if wait:
        status = ops.follow_logs(_jobs(address), sid, _write)
        console.print(f"{sid}: {status}", highlight=False)
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def status(submission_id: str = typer.Argument(..., help="Submission id."),
           address: Optional[str] = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Print a submitted job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its message."""
    info = _info(_jobs(address), submission_id)
    line = f"{submission_id}: {info.status.value}"
    if info.message:
        line += f"  {info.message}"
    console.print(line, highlight=False)


def _info(jobs, submission_id: str):
    try:
        return jobs.get_job_info(submission_id)
    except RuntimeError:
        fail(f"no job {submission_id!r} on this cluster (see `ganpipe jobs`)")


def logs(submission_id: str = typer.Argument(..., help="Submission id."),
         address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends.")) -> None:
    """Print a submitted job's logs (the driver's output: progress lines, errors)."""
    from pipeline.ops.submit import follow_logs

    jobs = _jobs(address)
    _info(jobs, submission_id)
    if follow:
        follow_logs(jobs, submission_id, _write)
    else:
        _write(jobs.get_job_logs(submission_id))


def stop(submission_id: str = typer.Argument(..., help="Submission id."),
         address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
         wait_s: float = typer.Option(60, "--wait-s", min=0, help="Seconds to wait for the job to stop.")) -> None:
    """Stop a running job (its driver and Ray Train workers); prints the status it ends in."""
    from pipeline.ops.submit import TERMINAL, wait_for

    jobs = _jobs(address)
    _info(jobs, submission_id)
    jobs.stop_job(submission_id)
    console.print(f"{submission_id}: {wait_for(jobs, submission_id, TERMINAL, wait_s)}", highlight=False)


def jobs_(address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
          tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for the model-version column (default $MLFLOW_TRACKING_URI)."),
          limit: int = typer.Option(20, min=1, help="Newest submissions to show.")) -> None:
    """A table of the cluster's submissions: id, job, status, start, duration, registered model version."""
    from pipeline.ops.submit import CHECK_METADATA

    details = sorted((j for j in _jobs(address).list_jobs() if CHECK_METADATA not in (j.metadata or {})),
                     key=lambda j: j.start_time or 0, reverse=True)[:limit]
    versions = _versions(details, tracking_uri)
    table = Table("submission id", "job", "status", "start", "duration", "model version")
    for j in details:
        meta = j.metadata or {}
        start = dt.datetime.fromtimestamp(j.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S") if j.start_time else "-"
        end = j.end_time or (time.time() * 1000 if j.start_time else None)
        duration = _hms((end - j.start_time) / 1000) if j.start_time and end else "-"
        table.add_row(j.submission_id or "-", meta.get("ganpipe_job", "-"), j.status.value, start, duration,
                      versions.get(j.submission_id or "", ""))
    console.print(table)


def _versions(details, tracking_uri: Optional[str]) -> dict[str, str]:
    """submission id → "model/version", best effort: an unreachable tracking store leaves it blank."""
    import os

    from mlflow.tracking import MlflowClient

    from pipeline.ops.schedule import registered_version

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return {}
    out = {}
    try:
        client = MlflowClient(tracking_uri=uri)
        for j in details:
            meta = j.metadata or {}
            if j.status.value == "SUCCEEDED" and "registered_model" in meta:
                v = registered_version(client, meta["registered_model"], meta.get("experiment", ""), j.submission_id)
                if v:
                    out[j.submission_id] = f"{meta['registered_model']}/{v}"
    except Exception as e:
        err.print(f"[yellow]warning:[/] model versions not shown: {e}", highlight=False)
    return out


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- schedule ------------------------------------------------------------------------------------

def _schedule(path: Path):
    from pipeline.ops.schedule import load_schedule
    from pipeline.spec import SpecError

    try:
        return load_schedule(path)
    except SpecError as e:
        fail(str(e))


def _tick_once(spec, address, tracking_uri, check_cluster: bool) -> "object":
    from pipeline.data.errors import DataError
    from pipeline.ops.schedule import tick
    from pipeline.ops.submit import SubmitError
    from pipeline.spec import SpecError
    from pipeline.tracking.run import TrackingUnreachable

    try:
        return tick(spec, address=address, tracking_uri=tracking_uri, say=lambda m: console.print(m, highlight=False),
                    check_cluster=check_cluster)
    except (SpecError, DataError, SubmitError, TrackingUnreachable) as e:
        fail(str(e))


CHECK_CLUSTER_OPTION = typer.Option(True, "--check-cluster/--no-check-cluster",
                                    help="Before submitting, run the seconds-long check job `ganpipe submit` runs: the cluster's `python` must have the project's dependencies (and the same ganpipe version, when installed there).")


@schedule_app.command("tick")
def schedule_tick(schedule: Path = typer.Argument(..., help="Schedule YAML (see jobs/schedules/)."),
                  address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
                  tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI holding the schedule's state (default: job, $MLFLOW_TRACKING_URI)."),
                  check_cluster: bool = CHECK_CLUSTER_OPTION) -> None:
    """One pass: record finished runs' promotion outcomes, then submit a retraining if due and triggered."""
    result = _tick_once(_schedule(schedule), address, tracking_uri, check_cluster)
    console.print(result.message, highlight=False)


@schedule_app.command("run")
def schedule_run(schedule: Path = typer.Argument(..., help="Schedule YAML (see jobs/schedules/)."),
                 address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
                 tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI holding the schedule's state."),
                 poll_s: float = typer.Option(60, "--poll-s", min=0.1, help="Seconds between ticks (finished runs are recorded at the next tick)."),
                 check_cluster: bool = CHECK_CLUSTER_OPTION) -> None:
    """Tick until stopped (Ctrl-C / SIGTERM); state lives in MLflow, so a restart carries on."""
    from pipeline.ops.schedule import next_fire

    from pipeline.ops.schedule import tick

    spec = _schedule(schedule)
    try:
        while True:
            try:
                message = tick(spec, address=address, tracking_uri=tracking_uri, say=lambda m: console.print(m, highlight=False),
                               check_cluster=check_cluster).message
            except Exception as e:  # a cluster or tracking server away for a while: say so, tick again later
                message = f"tick failed: {e}"
            now = dt.datetime.now(dt.timezone.utc)
            console.print(f"[{now.strftime('%H:%M:%S')}] {message}", highlight=False)
            # Sleep until the next poll or the next cron time, whichever comes first.
            time.sleep(max(0.1, min(poll_s, (next_fire(spec, now) - now).total_seconds())))
    except KeyboardInterrupt:
        console.print("stopped")


@schedule_app.command("status")
def schedule_status(schedule: Path = typer.Argument(..., help="Schedule YAML (see jobs/schedules/)."),
                    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI holding the schedule's state.")) -> None:
    """The schedule, its next time, the last snapshot trained, and every submission with its outcome."""
    from pipeline.ops.schedule import next_fire
    from pipeline.ops.state import ScheduleState
    from pipeline.spec import SpecError, load_job
    from pipeline.tracking.run import resolve_tracking_uri

    spec = _schedule(schedule)
    try:
        job = load_job(spec.job, spec.overrides())
    except SpecError as e:
        fail(str(e))
    uri = resolve_tracking_uri(tracking_uri or job.tracking.tracking_uri)
    records = ScheduleState(uri, spec.name).records()
    now = dt.datetime.now(dt.timezone.utc)
    trained = next((r for r in records if r.outcome not in ("failed", "stopped", "lost")), None)
    console.print(f"schedule {spec.name}: '{spec.cron}' {spec.timezone}, next {next_fire(spec, now).isoformat()}, "
                  f"trigger {spec.trigger}, promotion {spec.promotion.policy}, job {spec.job}, data {spec.data}", highlight=False)
    console.print(f"last snapshot trained: {trained.snapshot[:12] + ' by ' + trained.submission_id if trained else 'none'}", highlight=False)
    print_records(records)


def print_records(records) -> None:
    """`schedule status`'s submissions, newest first: a table, then each gate's reason on its own
    lines below it (a reason is a sentence: in a column of an 80-column table it wrapped a word a line).
    On a narrow terminal the snapshot and due columns give way first: the id repeats them."""
    from pipeline.ops.state import MODEL_VERSION, REASON

    # Ids are what users copy into `ganpipe logs ID`: never cut or wrapped (rich used to cut them to "nightly-…").
    whole = Column("submission id", no_wrap=True, overflow="ignore")
    fixed = [Column(name, no_wrap=True) for name in ("job status", "outcome", "version")]
    table = Table(whole, "snapshot", "due", *fixed)
    for r in records:
        table.add_row(r.submission_id, r.snapshot[:12], r.fire_time, r.job_status, r.outcome or "(open)",
                      r.tags.get(MODEL_VERSION, ""))
    console.print(table)
    for r in records:
        if r.tags.get(REASON):
            console.print(f"{r.submission_id}: {r.tags[REASON]}", highlight=False)


def register(app: typer.Typer) -> None:
    """Mount the cluster verbs on the main `ganpipe` app."""
    app.command()(submit)
    app.command()(status)
    app.command()(logs)
    app.command()(stop)
    app.command("jobs")(jobs_)
    app.add_typer(schedule_app, name="schedule")
