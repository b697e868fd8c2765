"""A tracking-server outage that outlasts training: the run ends with a clear message naming the
checkpoint and the `ganpipe register` command, and that command later registers the generator once."""
import shlex
import threading

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tracking.publish import RegistrationPending
from pipeline.train.launch import train
from tests.support import short_job

pytestmark = pytest.mark.integration


def test_register_completes_a_registration_after_an_outage(tmp_path, mlflow_server, ray_local, monkeypatch):
    # The driver's own MLflow client: no minutes of internal retries per call, so the run's
    # patience (3 s here, tracking.patience_s) is what bounds the wait.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    spec = short_job(tmp_path, steps=300, batch=8, tracking_uri=mlflow_server.uri, registered_model="gan-outage",
                     overrides=["train.checkpoint_every=50", "tracking.patience_s=3"])
    box: dict = {}

    def run() -> None:
        try:
            box["out"] = train(spec, run_name="outage", show_progress=False)
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    run_dir = tmp_path / "ray_results" / "outage"
    deadline = 240
    while deadline > 0 and thread.is_alive() and not list(run_dir.glob("checkpoint_*")):
        thread.join(0.05)
        deadline -= 0.05
    assert list(run_dir.glob("checkpoint_*")), "no checkpoint before the end"
    mlflow_server.stop()  # and it stays down until training is over
    assert thread.is_alive(), "training ended before the outage began"
    thread.join(600)

    error = box.get("error")
    assert isinstance(error, RegistrationPending), box
    message = str(error)
    assert error.checkpoint_path in message and "ganpipe register" in message and error.run_id in message
    assert error.checkpoint_path == str(sorted(d for d in run_dir.glob("checkpoint_*") if d.is_dir())[-1])  # the final one

    mlflow_server.start()
    command = shlex.split(error.command)
    assert command[:2] == ["ganpipe", "register"] and command[2] == error.checkpoint_path
    runner = CliRunner()
    res = runner.invoke(app, command[1:])
    assert res.exit_code == 0, res.output
    assert "registered models:/gan-outage/1 (alias champion)" in res.output
    again = runner.invoke(app, command[1:])  # exactly once: a second call finds the version
    assert again.exit_code == 0 and "already registered: models:/gan-outage/1" in again.output

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    versions = client.search_model_versions("name='gan-outage'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].tags["steps"] == "300" and versions[0].tags["run_id"] == error.run_id
    assert client.get_run(error.run_id).info.status == "FINISHED"
