"""A cluster that cannot run the job says so (issue 16 §6), against a real `ray start --head` whose
PATH puts a bare Python first, as a head started with `.venv/bin/ray start --head` from a shell where
the project's environment is not active does: Ray itself runs on the venv's Python, but a job
entrypoint's `python` is whatever the head's PATH holds.

The head gets the sentinel secrets in its environment (as a cluster gets its credentials), and the
submitter holds them too: after a job that fails inside that cluster, no secret is in what
`ganpipe submit --wait` printed, the job's logs, or anywhere in the head's Ray folders (issue 16 §4).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from ray.job_submission import JobSubmissionClient

from tests.cluster import RayCluster
from tests.integration.ops.conftest import ganpipe
from tests.secrets_search import SENTINELS, local_files, occurrences
from tests.support import pack_tiny

pytestmark = pytest.mark.integration
OLD_VERSION = "0.0.1"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A venv with nothing installed (no pip either: fast), plus an old `ganpipe` distribution
    record, so the check has a version to compare as well as modules to miss."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python3*/site-packages"))
    info = site / f"ganpipe-{OLD_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ganpipe\nVersion: {OLD_VERSION}\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def bare_head(bare_python, fake_aws_env):
    cluster = RayCluster(num_cpus=1, env={k: v for k, v in SENTINELS.items()})
    cluster.env["PATH"] = f"{bare_python.parent}:{cluster.env['PATH']}"  # before the venv that runs Ray itself
    cluster.start()
    yield cluster
    _stop_quickly(cluster)


def _stop_quickly(cluster: RayCluster, grace_s: float = 5.0) -> None:
    """`ray start --block` answers SIGTERM by stopping its processes one at a time with a grace
    period each (~30 s here once a job has run): SIGTERM, a short grace, then SIGKILL for the
    processes of this head's own session (its `ray start` and everything it spawned), then the
    usual stop, which reaps them and removes the temp folder."""
    head = cluster._procs[0]
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    ps = subprocess.run(["ps", "-o", "pid=", "-s", str(head.pid)], capture_output=True, text=True)
    for pid in (int(p) for p in ps.stdout.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.stop()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    return pack_tiny(tmp_path_factory)


def test_a_cluster_whose_python_lacks_the_project_is_refused_in_one_line(bare_head, bare_python, tiny_root):
    t0 = time.monotonic()
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", bare_head.dashboard_url, "--set", f"data.root={tiny_root}",
                "--wait", timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr  # one line, the last
    line = errors[0]
    assert f"{bare_python} " in line, line  # the Python it found, by path
    assert "lacks typer, " in line and "torch" in line and "mlflow" in line, line  # what it lacks
    assert f"ganpipe {OLD_VERSION} where this submitter has 0.1.0" in line, line  # the version mismatch
    assert "on every node" in line and "start Ray from the environment that has it" in line, line  # the two fixes
    assert "submitted" not in r.stdout
    # Nothing was submitted but the check, and nothing is left running.
    jobs = JobSubmissionClient(bare_head.dashboard_url).list_jobs()
    assert [(j.metadata, j.status.value) for j in jobs] == [({"ganpipe_check": "1"}, "SUCCEEDED")], jobs
    assert took < 60, f"the refusal took {took:.0f} s"


def test_without_the_check_the_job_fails_there_and_no_secret_lands_in_ray_logs(bare_head, tiny_root, tmp_path):
    """What the check prevents, for real: the job uploads, starts, and dies in the cluster on
    `import typer`. Then the secret sweep of the submitter's output, the job's logs and Ray's own
    log folders (job supervisor, job agent, runtime-env agent, raylet, GCS, dashboard)."""
    env = {**SENTINELS, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    sid = "nocheck-1"
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", bare_head.dashboard_url, "--set", f"data.root={tiny_root}",
                "--name", sid, "--wait", "--no-check-cluster", env=env, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ModuleNotFoundError: No module named 'typer'" in r.stdout and r.stdout.rstrip().endswith(f"{sid}: FAILED"), r.stdout
    logs = ganpipe("logs", sid, "--address", bare_head.dashboard_url, env=env)
    assert "No module named 'typer'" in logs.stdout

    places = [("submit --wait", (r.stdout + r.stderr).encode()), ("logs", (logs.stdout + logs.stderr).encode()),
              *local_files(bare_head.temp_dir)]
    names = [name for name, _ in places]
    # The sweep covered what it claims: the job driver's log and the agents that set up its environment.
    assert any(f"job-driver-{sid}.log" in n for n in names), names
    assert any(n.endswith("dashboard_agent.log") for n in names)
    # Ray writes a job's runtime-env variables into runtime_env_agent.log: the tracking URI the
    # submission passed is there, so a secret passed the same way (a credential added to PASSED_ENV)
    # would be found.
    agent_log = b"".join(data for name, data in places if name.endswith("runtime_env_agent.log"))
    assert env["MLFLOW_TRACKING_URI"].encode() in agent_log
    assert occurrences(places) == []


def test_a_schedule_tick_checks_the_cluster_before_submitting(bare_head, bare_python, tiny_root, tmp_path):
    """`ganpipe schedule tick` runs submit's check before it submits: refused in one line, nothing
    submitted or recorded; with --no-check-cluster the tick submits (and the job would die there)."""
    import yaml

    from pipeline.ops.state import ScheduleState

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = tmp_path / "checked.yaml"
    path.write_text(yaml.safe_dump({"name": "checked", "cron": "* * * * *", "job": "jobs/quickstart.yaml", "data": tiny_root,
                                    "set": [f"tracking.tracking_uri={uri}", f"checkpoint.storage_path={tmp_path / 'runs'}"]}))
    jobs = JobSubmissionClient(bare_head.dashboard_url)
    before = {j.submission_id for j in jobs.list_jobs()}

    r = ganpipe("schedule", "tick", str(path), "--address", bare_head.dashboard_url, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bare_python} " in errors[0] and "lacks typer, " in errors[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "submitted" not in r.stdout
    new = [j for j in jobs.list_jobs() if j.submission_id not in before]
    assert [j.metadata for j in new] == [{"ganpipe_check": "1"}], new  # the check job only
    assert ScheduleState(uri, "checked").records() == []  # nothing to reconcile at the next tick

    r = ganpipe("schedule", "tick", str(path), "--address", bare_head.dashboard_url, "--no-check-cluster", timeout=120)
    assert r.returncode == 0 and "submitted checked-" in r.stdout, r.stdout + r.stderr
    new = [j for j in jobs.list_jobs() if j.submission_id not in before]
    assert sorted(j.metadata.get("schedule", "check") for j in new) == ["check", "checked"], new
