"""Real servers on 127.0.0.1 for the integration tests: moto's S3 endpoint and an MLflow server.

Nothing mocks boto3 or MLflow: the code under test talks HTTP to these processes. They bind free
ports and are stopped by the fixtures that started them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
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

    def __init__(self, workdir, port: int, *, artifacts: str | None = None, basic_auth_password: str | None = None,
                 env: dict[str, str] | None = None):
        """`artifacts`: where served artifacts go (default a folder in workdir; s3://... needs
        MLFLOW_S3_ENDPOINT_URL and keys in `env`). `basic_auth_password`: run the basic-auth app with
        user `admin` and this password (clients use MLFLOW_TRACKING_USERNAME/PASSWORD)."""
        self.workdir, self.port = workdir, port
        self.uri = f"http://127.0.0.1:{port}"
        self.artifacts = artifacts or f"{workdir}/artifacts"
        self.basic_auth_password = basic_auth_password
        self.env = env or {}
        self.proc = None

    def start(self, timeout: float = 60.0) -> None:
        import subprocess
        import sys
        import time
        import urllib.error
        import urllib.request

        mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        args = [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.workdir}/mlflow.db", "--artifacts-destination", self.artifacts]
        # No GenAI job runner (a dozen huey consumer processes): nothing here uses it, and 2 cores are few.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        if self.basic_auth_password is not None:
            ini = f"{self.workdir}/basic_auth.ini"
            with open(ini, "w") as f:  # the password itself goes by environment, never into a file
                f.write(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{self.workdir}/basic_auth.db\n"
                        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            args += ["--app-name", "basic-auth"]
            env.update(MLFLOW_AUTH_CONFIG_PATH=ini, MLFLOW_AUTH_ADMIN_PASSWORD=self.basic_auth_password)
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", uuid.uuid4().hex)  # CSRF key the auth app requires
        self.proc = subprocess.Popen(
            args, env=env, stdout=open(f"{self.workdir}/server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:  # basic-auth answers 401 once it is up
                if e.code == 401:
                    return
                time.sleep(0.3)
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


@contextlib.contextmanager
def _moto_checking_signatures(free_actions: int):
    """moto's own server, in its own process, checking every request's signature and IAM policy after
    its first `free_actions` requests (moto's INITIAL_NO_AUTH_ACTION_COUNT: authentication is a
    process-wide switch there, so the session's endpoint stays open). Killed by process group."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(free_actions)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()  # not an S3 action: not counted
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "moto server did not start"
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def denying_s3():
    """A real S3 endpoint that checks signatures against its (empty) IAM: every key is refused, as a
    bucket refuses keys without access."""
    with _moto_checking_signatures(0) as url:
        yield url


@pytest.fixture
def read_only_s3(fake_aws_env):
    """A real S3 endpoint with a bucket `bucket` and keys that may list and read it but not write:
    (endpoint URL, {AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY}), as a data team's read-only role."""
    import json

    setup = 4  # the four calls below, made before moto starts checking
    with _moto_checking_signatures(setup) as url:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bucket")
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
        iam.create_user(UserName="reader")
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": ["arn:aws:s3:::bucket", "arn:aws:s3:::bucket/*"]}]}
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture(scope="session")
def ray_head(fake_aws_env):
    """A real `ray start --head` on 127.0.0.1 (dashboard and Jobs API on, 2 CPUs), started with the
    test AWS credentials in its environment as a cluster gets them from its secrets; add nodes with
    `ray_head.add_node(num_cpus=..., resources=...)`. Stopped by process group at the end."""
    from tests.cluster import RayCluster

    cluster = RayCluster(num_cpus=2).start()
    yield cluster
    cluster.stop()
