"""Shared by the cluster-operation tests: one MLflow server for the module's jobs, the CLI as a
subprocess (as a user or a CronJob runs it), and the shortened quickstart's overrides."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import MlflowServer, free_port

REPO = Path(__file__).resolve().parents[3]
GANPIPE = str(Path(sys.executable).parent / "ganpipe")


def short_overrides(tmp: Path, *, data_root: str, tracking_uri: str, model: str, steps: int = 20) -> list[str]:
    """jobs/quickstart.yaml shortened: few steps, tiny batch, no eval; checkpoints under tmp."""
    return [f"data.root={data_root}", "data.shuffle_buffer=32", f"train.steps={steps}", "train.global_batch=8",
            "train.log_every=10", "train.sample_every=1000", "train.checkpoint_every=1000",
            f"checkpoint.storage_path={tmp / 'ray_results'}", f"tracking.tracking_uri={tracking_uri}",
            f"tracking.registered_model={model}", "tracking.experiment=ops-tests", "eval=null"]


def ganpipe(*args: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([GANPIPE, *args], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def ops_mlflow(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> str:
    from pipeline.data.pack import pack

    root = tmp_path_factory.mktemp("digits")
    pack("digits", str(root), shard_size=500, resolution=32, progress=False)
    return str(root)
