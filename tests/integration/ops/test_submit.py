"""`ganpipe submit/status/logs/stop/jobs` against a real `ray start --head` with its dashboard."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobSubmissionClient

from tests.integration.ops.conftest import REPO, ganpipe, short_overrides

pytestmark = pytest.mark.integration
MODEL = "gan-submit"


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_submit_wait_runs_the_quickstart_on_the_cluster(ray_head, ops_mlflow, digits_root, tmp_path):
    sid = f"qs-{uuid.uuid4().hex[:8]}"
    sets = _sets(short_overrides(tmp_path, data_root=digits_root, tracking_uri=ops_mlflow.uri, model=MODEL))
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", ray_head.dashboard_url, *sets, "--name", sid, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"submitted {sid}" in r.stdout and f"{ray_head.dashboard_url}/#/jobs/{sid}" in r.stdout
    # the job's log, followed by --wait, has the plain progress line at each log step (not a TTY there)
    assert "step 10/20 (50%)" in r.stdout and "step 20/20 (100%)" in r.stdout and "ETA" in r.stdout
    assert r.stdout.rstrip().endswith(f"{sid}: SUCCEEDED")

    client = MlflowClient(tracking_uri=ops_mlflow.uri)
    runs = client.search_runs([client.get_experiment_by_name("ops-tests").experiment_id], f"attributes.run_name = '{sid}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the submission id is the run name
    versions = client.search_model_versions(f"name='{MODEL}'")
    mine = [v for v in versions if v.run_id == runs[0].info.run_id]
    assert len(mine) == 1
    assert mine[0].tags.get("ray_submission_id") == sid, mine[0].tags  # set by the driver inside a Ray job

    listed = subprocess.run([str(REPO / ".venv/bin/ray"), "job", "list", "--address", ray_head.dashboard_url],
                            capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled"})
    assert sid in listed.stdout, listed.stdout + listed.stderr
    table = ganpipe("jobs", "--address", ray_head.dashboard_url, "--tracking-uri", ops_mlflow.uri)
    row = next(line for line in table.stdout.splitlines() if sid in line)
    assert "quickstart" in row and "SUCCEEDED" in row and f"{MODEL}/{mine[0].version}" in row


def test_bad_spec_is_refused_before_the_cluster_sees_it(ray_head, digits_root, tmp_path):
    jobs = JobSubmissionClient(ray_head.dashboard_url)
    before = len(jobs.list_jobs())
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", ray_head.dashboard_url, "--set", f"data.root={digits_root}",
                "--set", "scaling.num_workers=3")  # 64 is not divisible by 3
    assert r.returncode == 2 and "scaling.num_workers (3)" in r.stderr
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", ray_head.dashboard_url, "--set", f"data.root={tmp_path / 'missing'}")
    assert r.returncode == 2 and "manifest" in r.stderr
    assert len(jobs.list_jobs()) == before


def test_stop_a_running_job(ray_head, ops_mlflow, digits_root, tmp_path):
    sid = f"long-{uuid.uuid4().hex[:8]}"
    sets = _sets(short_overrides(tmp_path, data_root=digits_root, tracking_uri=ops_mlflow.uri, model=MODEL, steps=100_000))
    r = ganpipe("submit", "jobs/quickstart.yaml", "--address", ray_head.dashboard_url, *sets, "--name", sid)
    assert r.returncode == 0, r.stderr
    jobs = JobSubmissionClient(ray_head.dashboard_url)
    deadline = time.time() + 180
    while "step 10/100000" not in jobs.get_job_logs(sid):  # training is really under way
        assert time.time() < deadline and jobs.get_job_status(sid).value in ("PENDING", "RUNNING"), jobs.get_job_logs(sid)
        time.sleep(1)
    r = ganpipe("stop", sid, "--address", ray_head.dashboard_url)
    assert r.returncode == 0 and f"{sid}: STOPPED" in r.stdout, r.stdout + r.stderr
    assert ganpipe("status", sid, "--address", ray_head.dashboard_url).stdout.startswith(f"{sid}: STOPPED")
    logs = ganpipe("logs", sid, "--address", ray_head.dashboard_url)
    assert "step 10/100000" in logs.stdout
    assert ganpipe("status", "no-such-job", "--address", ray_head.dashboard_url).returncode == 2


def test_submit_a_search_runs_ganpipe_tune_on_the_cluster(ray_head, ops_mlflow, digits_root, tmp_path):
    """Two trials of a tiny search as one Ray job: the search id is the submission id, the parent
    and child runs carry it, and the winner is registered once."""
    import yaml

    from pipeline.tracking import names

    sid = f"search-{uuid.uuid4().hex[:8]}"
    fixed = [o for o in short_overrides(tmp_path, data_root=digits_root, tracking_uri=ops_mlflow.uri, model=MODEL) if o != "eval=null"]
    search = {"name": "ops-search", "job": str(REPO / "jobs/quickstart.yaml"), "trials": 1, "max_concurrent": 1,
              "set": [*fixed, "scaling.num_workers=1", "train.eval_every=10", "eval.num_samples=64", "eval.classifier_steps=30",
                      f"eval.cache_dir={tmp_path / 'cache'}"],
              "space": {"regularization.r1.gamma": {"grid": [0.1, 1.0]}}, "scheduler": {"kind": "none"}, "winner": "register"}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    r = ganpipe("submit", str(path), "--address", ray_head.dashboard_url, "--name", sid, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"submitted {sid}" in r.stdout and f"done search {sid}" in r.stdout  # tune's own summary, in the job's log
    assert r.stdout.rstrip().endswith(f"{sid}: SUCCEEDED")

    client = MlflowClient(tracking_uri=ops_mlflow.uri)
    exp_id = client.get_experiment_by_name("ops-tests").experiment_id
    runs = client.search_runs([exp_id], f"tags.`{names.SEARCH}` = '{sid}'")
    roles = sorted(run.data.tags[names.ROLE] for run in runs)
    assert roles == ["parent", "trial", "trial"] and all(run.info.status == "FINISHED" for run in runs)
    parent = next(run for run in runs if run.data.tags[names.ROLE] == "parent")
    assert parent.info.run_name == sid and parent.data.tags[names.SUBMISSION_ID] == sid
    assert "best_job.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    published = [v for v in client.search_model_versions(f"name='{MODEL}'") if v.tags.get(names.SEARCH) == sid]
    assert len(published) == 1 and published[0].run_id == parent.data.tags[names.BEST_RUN_ID]
