"""Tracking and registry through a real `mlflow server` on 127.0.0.1, including an outage mid-run:
training goes on, buffered metrics arrive once the server is back, and the generator is registered,
aliased and loadable by alias over HTTP."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.pack import pack
from pipeline.spec import load_job
from pipeline.train.launch import train

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_training_survives_a_tracking_server_outage(tmp_path, mlflow_server, ray_local):
    pack("digits", str(tmp_path / "digits"), shard_size=500, resolution=32, progress=False)
    steps, batch = 300, 8
    spec = load_job(REPO / "jobs/quickstart.yaml", [
        f"data.root={tmp_path / 'digits'}", "data.shuffle_buffer=32",
        f"train.steps={steps}", f"train.global_batch={batch}", "train.log_every=10",
        "train.sample_every=100", "train.checkpoint_every=50",
        f"checkpoint.storage_path={tmp_path / 'ray_results'}", f"tracking.tracking_uri={mlflow_server.uri}",
        "tracking.registered_model=gan-served", "eval=null",
    ])
    box = {}
    runner = threading.Thread(target=lambda: box.update(out=train(spec, run_name="outage", show_progress=False)))
    runner.start()
    run_dir = tmp_path / "ray_results" / "outage"
    deadline = time.time() + 240
    while not list(run_dir.glob("checkpoint_*")) and time.time() < deadline and runner.is_alive():
        time.sleep(0.05)
    mlflow_server.stop()  # outage: the server process is gone
    time.sleep(5)
    assert runner.is_alive(), "training ended during the outage"
    mlflow_server.start()
    runner.join(timeout=600)
    assert "out" in box, "training did not finish"
    out = box["out"]

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    steps_logged = sorted(m.step for m in client.get_metric_history(out.run_id, "samples_seen"))
    assert steps_logged == list(range(10, steps + 1, 10))  # nothing lost to the outage, nothing twice
    mv = client.get_model_version_by_alias("gan-served", "champion")
    assert mv.version == out.model_version and mv.tags["steps"] == str(steps)

    loader = (
        "import sys, json, mlflow, torch\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "g = mlflow.pytorch.load_model('models:/gan-served@champion')\n"
        "print(json.dumps(list(g(torch.randn(3, 100)).shape)))\n"
    )
    res = subprocess.run([sys.executable, "-c", loader, mlflow_server.uri], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [3, 3, 32, 32]
