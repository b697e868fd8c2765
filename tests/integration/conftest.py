"""Real servers on 127.0.0.1 for the integration tests: moto's S3 endpoint and an MLflow server.

Nothing mocks boto3 or MLflow: the code under test talks HTTP to these processes. They bind free
ports and are stopped by the fixtures that started them.
"""

from __future__ import annotations

import logging
import os
import uuid

import boto3
import pytest


@pytest.fixture(scope="session")
def s3_endpoint(fake_aws_env) -> str:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name




class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1 (SQLite backend, served artifacts), startable
    again on the same port to play an outage. Stopped by process group id."""

    def __init__(self, workdir, port: int):
        self.workdir, self.port = workdir, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self, timeout: float = 60.0) -> None:
        import subprocess
        import sys
        import time
        import urllib.request

        mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.workdir}/mlflow.db",
             "--artifacts-destination", f"{self.workdir}/artifacts"],
            stdout=open(f"{self.workdir}/server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not come up on {self.uri}; see {self.workdir}/server.log")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                self.proc.wait(timeout=20)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_head(fake_aws_env):
    """A real `ray start --head` on 127.0.0.1 (dashboard and Jobs API on, 2 CPUs), started with the
    test AWS credentials in its environment as a cluster gets them from its secrets; add nodes with
    `ray_head.add_node(num_cpus=..., resources=...)`. Stopped by process group at the end."""
    from tests.cluster import RayCluster

    cluster = RayCluster(num_cpus=2).start()
    yield cluster
    cluster.stop()
