"""Two Ray nodes on this machine, one worker on each (scaling.placement: strict_spread).

The nodes share no folder: shards stream from the S3 endpoint, checkpoints go to it, metrics and the
registered generator go to an MLflow server. `ganpipe train` runs as its own process against the
`ray_head` cluster (RAY_ADDRESS), since this pytest process already holds an in-process Ray. Once a
checkpoint is registered, the worker on the added node is SIGKILLed: Ray Train restarts the group on
both nodes again, it resumes from that checkpoint, finishes, and registers exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.pack import pack
from pipeline.tracking import names
from tests.processes import descendants

REPO = Path(__file__).resolve().parents[2]
GANPIPE = Path(sys.executable).parent / "ganpipe"
pytestmark = pytest.mark.integration

# 60 steps, checkpoints every 10: after the first registered one, five more leave time for the kill.
STEPS, BATCH, CHECKPOINT_EVERY = 60, 8, 10


def _registered_step(s3, bucket: str, run_name: str) -> int | None:
    """The step of the checkpoint Ray Train has registered (its snapshot names it), or None yet."""
    try:
        body = s3.get_object(Bucket=bucket, Key=f"runs/{run_name}/checkpoint_manager_snapshot.json")["Body"].read()
        latest = json.loads(body).get("latest_checkpoint_result")
    except (s3.exceptions.NoSuchKey, ValueError):
        return None
    return latest["metrics"]["step"] if latest else None


def _train_run(dashboard_url: str, run_name: str) -> dict:
    """The Train V2 state API's record of the run: its attempts and each attempt's workers' node ids."""
    with urllib.request.urlopen(f"{dashboard_url}/api/train/v2/runs/v1", timeout=30) as r:
        runs = [run for run in json.load(r)["train_runs"] if run["name"] == run_name]
    assert len(runs) == 1, f"train state API has {len(runs)} runs named {run_name}"
    return runs[0]


def test_two_nodes_strict_spread_s3_and_a_killed_worker(tmp_path, ray_head, s3_endpoint, bucket, mlflow_server):
    # A generous start timeout: on a busy 2-core machine a node's raylet and agents take a while.
    node_b = ray_head.add_node(num_cpus=1, resources={"ganpipe_node_b": 1}, timeout=180)
    try:
        root = f"s3://{bucket}/digits"
        pack("digits", root, shard_size=300, resolution=32, endpoint_url=s3_endpoint, progress=False)
        run_name = "two-nodes"
        sets = [
            f"data.root={root}", f"data.endpoint_url={s3_endpoint}", "data.shuffle_buffer=32",
            f"train.steps={STEPS}", f"train.global_batch={BATCH}", "train.log_every=5",
            f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.sample_every=1000",
            "scaling.num_workers=2", "scaling.placement=strict_spread", "scaling.start_timeout_s=60",
            f"checkpoint.storage_path=s3://{bucket}/runs", f"checkpoint.endpoint_url={s3_endpoint}",
            f"tracking.tracking_uri={mlflow_server.uri}", "tracking.registered_model=gan-two-nodes", "eval=null",
        ]
        cmd = [str(GANPIPE), "train", str(REPO / "jobs/quickstart.yaml"), "--name", run_name, "--no-progress"]
        for s in sets:
            cmd += ["--set", s]
        # Object stores are capped by the cluster's nodes (tests/cluster.py); the driver only connects.
        env = {
            **os.environ, "RAY_ADDRESS": ray_head.address,
            "RAY_TRAIN_ENABLE_STATE_TRACKING": "1",  # the Train state API below reads the workers' nodes
        }
        log_path = tmp_path / "train.log"
        with open(log_path, "wb") as log:
            driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
        try:
            s3 = boto3.client("s3", endpoint_url=s3_endpoint)
            registered, deadline = None, time.time() + 300
            while registered is None and driver.poll() is None and time.time() < deadline:
                registered = _registered_step(s3, bucket, run_name)
                time.sleep(0.1)
            assert registered is not None and registered < STEPS, f"no checkpoint before the end:\n{log_path.read_text()[-3000:]}"
            # The worker on node B: a Ray Train worker process below that node's `ray start`.
            victims = [pid for pid, cmd in descendants(node_b.pid).items() if cmd.startswith("ray::RayTrainWorker")]
            assert len(victims) == 1, f"expected one train worker on node B, found {victims}"
            os.kill(victims[0], signal.SIGKILL)
            assert driver.wait(timeout=400) == 0, log_path.read_text()[-4000:]
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()

        run = _train_run(ray_head.dashboard_url, run_name)
        attempts = run["attempts"]
        assert len(attempts) >= 2, "the killed worker should have caused a second attempt"
        for attempt in attempts:
            nodes = {w["node_id"] for w in attempt["workers"]}
            assert len(attempt["workers"]) == 2 and len(nodes) == 2, f"workers shared a node: {attempt['workers']}"
        assert attempts[-1]["status"] == "FINISHED"

        client = MlflowClient(tracking_uri=mlflow_server.uri)
        [mlflow_run] = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id],
                                          filter_string=f"attributes.run_name = '{run_name}'")
        run_id = mlflow_run.info.run_id
        assert mlflow_run.info.status == "FINISHED"
        resumed = client.get_metric_history(run_id, names.RESUMED_FROM_STEP)
        assert [m.value for m in resumed] and resumed[-1].value >= registered and resumed[-1].value % CHECKPOINT_EVERY == 0
        seen = client.get_metric_history(run_id, names.SAMPLES_SEEN)
        assert max(m.value for m in seen) == STEPS * BATCH  # resumed count, not restarted or doubled
        versions = client.search_model_versions("name = 'gan-two-nodes'")
        assert len(versions) == 1, [v.version for v in versions]  # registered once, despite the restart
        assert versions[0].tags[names.RUN_ID] == run_id and versions[0].tags[names.STEPS] == str(STEPS)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"runs/{run_name}/").get("Contents", [])]
        assert any(k.endswith("state.pt") for k in keys)  # checkpoints live in the bucket, not on a node
    finally:
        # Take node B out again so the session's cluster is as the other tests expect it.
        os.killpg(node_b.pid, signal.SIGTERM)
        try:
            node_b.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node_b.pid, signal.SIGKILL)
            node_b.wait()
