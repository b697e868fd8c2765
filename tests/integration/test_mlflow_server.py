"""Tracking and registry through a real `mlflow server` on 127.0.0.1, including an outage mid-run:
training goes on, buffered metrics arrive once the server is back, and the generator is registered,
aliased and loadable by alias over HTTP."""
import json
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.support import BackgroundTraining, short_job

pytestmark = pytest.mark.integration


def test_training_survives_a_tracking_server_outage(tmp_path, mlflow_server, ray_local):
    steps = 600  # long enough that the run is still going after a 5 s outage on a fast machine
    spec = short_job(tmp_path, steps=steps, batch=8, tracking_uri=mlflow_server.uri, registered_model="gan-served",
                     overrides=["train.sample_every=100", "train.checkpoint_every=50"])
    run = BackgroundTraining(spec, "outage")
    assert run.wait_until(lambda: list(run.run_dir.glob("checkpoint_*"))), "no checkpoint before the end"
    mlflow_server.stop()  # outage: the server process is gone
    time.sleep(5)
    assert run.running, "training ended during the outage"
    mlflow_server.start()
    out = run.finish()

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
