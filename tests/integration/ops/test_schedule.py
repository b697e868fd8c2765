"""Scheduled retraining against a real Ray head, the test S3 endpoint and a real MLflow server:
two ticks at once submit once, a scheduler killed mid-run and restarted records the decision once,
a tick with no new data does nothing, and an id already on the cluster is adopted, not resubmitted."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from ray.job_submission import JobSubmissionClient

from pipeline.data.manifest import load_manifest
from pipeline.data.pack import pack
from pipeline.ops.schedule import load_schedule, submission_id_for, tick
from pipeline.ops.state import DECISION_METRIC, ScheduleState
from tests.integration.ops.conftest import GANPIPE, REPO, ganpipe, short_overrides

pytestmark = pytest.mark.integration


def _schedule(tmp_path: Path, name: str, data: str, tracking_uri: str, model: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    sets = [o for o in short_overrides(tmp_path, data_root=data, tracking_uri=tracking_uri, model=model) if not o.startswith("data.root=")]
    path.write_text(yaml.safe_dump({
        "name": name, "cron": "* * * * *", "timezone": "UTC", "job": str(REPO / "jobs/quickstart.yaml"), "set": sets,
        "data": data, "trigger": "new-data", "promotion": {"policy": "gate", "metric": "fd", "min_improvement": 0.05},
        "max_in_flight": 1,
    }))
    return path


def _jobs_of(jobs: JobSubmissionClient, schedule: str):
    return [j for j in jobs.list_jobs() if (j.metadata or {}).get("schedule") == schedule]


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # passed on to the job: not a secret
    return {"AWS_ENDPOINT_URL_S3": s3_endpoint}


def test_ticks_submit_once_and_a_restarted_scheduler_records_the_decision_once(ray_head, ops_mlflow, bucket, s3_env, tmp_path):
    data = f"s3://{bucket}/digits"
    pack("digits", data, shard_size=500, resolution=32, progress=False)  # new shards land
    path = _schedule(tmp_path, "nightly", data, ops_mlflow.uri, "gan-sched")
    jobs = JobSubmissionClient(ray_head.dashboard_url)

    # Two schedulers tick at the same moment: exactly one submission (Ray refuses the duplicate id).
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ganpipe("schedule", "tick", str(path), "--address", ray_head.dashboard_url), range(2)))
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results]
    assert any("submitted nightly-" in r.stdout for r in results), [r.stdout for r in results]
    submitted = _jobs_of(jobs, "nightly")
    assert len(submitted) == 1
    sid = submitted[0].submission_id
    _, snapshot = load_manifest(data)
    assert sid == submission_id_for(load_schedule(path), snapshot)
    state = ScheduleState(ops_mlflow.uri, "nightly")
    assert [r.submission_id for r in state.records()] == [sid]

    # Again at once, in this process: nothing, and says why.
    again = tick(load_schedule(path), address=ray_head.dashboard_url, say=lambda m: None)
    assert again.submitted is None and "a run still in flight" in again.message

    # A scheduler loop, killed (SIGKILL) while the job runs, then restarted.
    log1 = open(tmp_path / "run1.log", "w+")
    loop = subprocess.Popen([GANPIPE, "schedule", "run", str(path), "--address", ray_head.dashboard_url, "--poll-s", "1"],
                            cwd=REPO, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    _until(lambda: "still in flight" in Path(log1.name).read_text(), 120, "the first scheduler's tick")
    os.killpg(loop.pid, signal.SIGKILL)
    loop.wait()
    assert jobs.get_job_status(sid).value in ("PENDING", "RUNNING")  # killed mid-run
    log2 = open(tmp_path / "run2.log", "w+")
    loop = subprocess.Popen([GANPIPE, "schedule", "run", str(path), "--address", ray_head.dashboard_url, "--poll-s", "1"],
                            cwd=REPO, stdout=log2, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _until(lambda: state.records()[0].outcome is not None, 420, "the promotion decision",
               lambda: jobs.get_job_logs(sid)[-4000:])
        _until(lambda: Path(log2.name).read_text().count("no new data") >= 2, 60, "two more ticks")  # and nothing more
    finally:
        os.killpg(loop.pid, signal.SIGTERM)
        loop.wait()

    assert jobs.get_job_status(sid).value == "SUCCEEDED"
    assert len(_jobs_of(jobs, "nightly")) == 1
    record = state.records()[0]
    assert len(state.client.get_metric_history(record.run_id, DECISION_METRIC)) == 1  # recorded once
    assert Path(log2.name).read_text().count(f"{sid}: gan-sched v") == 1
    try:
        import pipeline.tracking.gate  # noqa: F401
    except ImportError:
        assert record.outcome == "registered" and "gate not installed" in record.tags["ganpipe.reason"]
    else:
        assert record.outcome in ("first", "promoted", "kept"), record.tags
        champion = state.client.get_model_version_by_alias("gan-sched", "champion").version
        assert record.tags["ganpipe.champion"] == champion and record.tags["ganpipe.model_version"] == "1"
    status = ganpipe("schedule", "status", str(path))
    assert sid in status.stdout and record.outcome in status.stdout and f"last snapshot trained: {snapshot[:12]}" in status.stdout

    # No new data: nothing.
    quiet = tick(load_schedule(path), address=ray_head.dashboard_url, say=lambda m: None)
    assert quiet.submitted is None and "no new data" in quiet.message and len(_jobs_of(jobs, "nightly")) == 1


def test_a_submission_already_on_the_cluster_is_adopted_not_repeated(ray_head, ops_mlflow, bucket, s3_env, tmp_path):
    """A scheduler that died right after Ray accepted its submission, before recording it: the next
    tick derives the same id, Ray refuses it, and the tick records the existing job instead."""
    data = f"s3://{bucket}/digits"
    pack("digits", data, shard_size=700, resolution=32, progress=False)
    spec = load_schedule(_schedule(tmp_path, "adopt", data, ops_mlflow.uri, "gan-adopt"))
    _, snapshot = load_manifest(data)
    sid = submission_id_for(spec, snapshot)
    jobs = JobSubmissionClient(ray_head.dashboard_url)
    jobs.submit_job(entrypoint="python -c 'print(42)'", submission_id=sid, metadata={"schedule": "adopt"})

    first = tick(spec, address=ray_head.dashboard_url, say=lambda m: None)
    assert first.submitted is None and f"{sid} was already submitted" in first.message
    assert [j.submission_id for j in _jobs_of(jobs, "adopt")] == [sid]
    state = ScheduleState(ops_mlflow.uri, "adopt")
    assert [r.submission_id for r in state.records()] == [sid]
    _until(lambda: jobs.get_job_status(sid).is_terminal(), 120, "the adopted job")
    later = tick(spec, address=ray_head.dashboard_url, say=lambda m: None)
    record = state.records()[0]
    assert record.outcome == "no-version"  # it succeeded, but that job registered nothing
    assert "no new data" in later.message and len(_jobs_of(jobs, "adopt")) == 1


def _until(condition, timeout: float, what: str, explain=lambda: "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}\n{explain()}"
        time.sleep(1)
