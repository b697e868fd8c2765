"""The champion served by MLflow's own tooling: a generator logged the way training logs it (pt2,
pickle-free) and registered on a real `mlflow server`, then `mlflow models serve -m
models:/NAME@champion --env-manager local` as a real process, asked over HTTP with plain JSON (no
code of ours on the client side)."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
import torch

from pipeline.gan.models import build_models
from pipeline.tracking.registry import log_generator, register
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

NAME, Z_DIM, RES = "gan-serving-test", 16, 16


@pytest.fixture
def champion(mlflow_server):
    torch.manual_seed(0)
    generator, _ = build_models(kind="dcgan", z_dim=Z_DIM, g_width=8, d_width=8, resolution=RES, g_norm="batch",
                                d_dropout=0.0)
    mlflow.set_tracking_uri(mlflow_server.uri)
    with mlflow.start_run() as run:
        pass
    model_uri = log_generator(generator, z_dim=Z_DIM, run_id=run.info.run_id, tracking_uri=mlflow_server.uri)
    version, became_champion = register(model_uri, name=NAME, tags={"run_id": run.info.run_id},
                                        tracking_uri=mlflow_server.uri)
    assert became_champion
    return mlflow_server.uri


@pytest.fixture
def served(champion, tmp_path):
    with serve(champion, f"models:/{NAME}@champion", tmp_path) as url:
        yield url


@contextlib.contextmanager
def serve(tracking_uri: str, model_uri: str, tmp_path):
    """A `mlflow models serve` process for `model_uri`; yields its base URL, stops its process group."""
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    # `--env-manager local` runs `exec uvicorn ...` through bash: uvicorn must be on PATH, as it is
    # in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)  # serving must not need pickles
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, cwd=tmp_path, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # mlflow's CLI and the uvicorn it execs
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _invoke(url: str, payload: dict) -> dict:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_champion_is_served_and_matches_the_loaded_model(served, champion):
    # One test, one server pair: starting `mlflow server` and `mlflow models serve` is the slow part.
    z = torch.randn(5, Z_DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    body = _invoke(served, {"inputs": z.tolist()})
    images = np.asarray(body["predictions"], dtype=np.float32)
    assert images.shape == (5, 3, RES, RES)
    assert np.isfinite(images).all() and images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0  # not a constant answer

    mlflow.set_tracking_uri(champion)
    local = mlflow.pytorch.load_model(f"models:/{NAME}@champion")
    with torch.no_grad():
        want = local(z)
    assert want.dtype == torch.float32
    # JSON carries float32 values exactly (they print as exact doubles); the tolerance covers a
    # thread-count dependent summation order between the two processes.
    torch.testing.assert_close(torch.from_numpy(images), want, atol=1e-5, rtol=0)

    # The logged signature (z: float32 (-1, z_dim)) is enforced: a wrong latent width is a 400.
    with pytest.raises(urllib.error.HTTPError) as err:
        _invoke(served, {"inputs": np.zeros((2, Z_DIM + 1), dtype=np.float32).tolist()})
    assert err.value.code == 400
    assert "shape" in err.value.read().decode().lower()
