"""No secret lands anywhere: a real training job against a basic-auth MLflow server whose artifacts
live on the S3 endpoint, with sentinel values for every secret the project touches, then a byte
search of everywhere they could land.

Places searched: what every CLI call printed; the tracking server's databases and log; every object in
the bucket (shards, checkpoints, MLflow artifacts: params file, job.yaml, model files, sample grids);
Ray's whole temp folder of the training process (session logs of the driver and every worker).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest

from pipeline.data.pack import pack
from tests.integration.conftest import MlflowServer, free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GANPIPE = [sys.executable, "-m", "pipeline"]

SENTINELS = {
    "AWS_ACCESS_KEY_ID": "AKIASENTINELKEY7Q2Z",
    "AWS_SECRET_ACCESS_KEY": "sentinel-s3-secret-9c41f7",
    "AWS_SESSION_TOKEN": "sentinel-session-token-5be2",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-pw-30d8a1",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "sentinel-flask-key-77e0b3",  # the server's CSRF key
}


def occurrences(needles: list[bytes], files: list[tuple[str, bytes]]) -> list[str]:
    """'where: needle' for every needle found in any (name, content)."""
    return [f"{name}: {n.decode()}" for name, data in files for n in needles if n in data]


def local_files(root: Path) -> list[tuple[str, bytes]]:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            try:
                out.append((str(path), path.read_bytes()))
            except OSError:
                continue
    return out


def bucket_objects(endpoint: str, bucket: str) -> list[tuple[str, bytes]]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return [(f"s3://{bucket}/{k}", s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def test_the_search_finds_a_planted_secret(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "log.txt").write_bytes(b"...token=" + SENTINELS["AWS_SESSION_TOKEN"].encode() + b"\n")
    found = occurrences([v.encode() for v in SENTINELS.values()], local_files(tmp_path))
    assert found == [f"{tmp_path / 'deep' / 'log.txt'}: {SENTINELS['AWS_SESSION_TOKEN']}"]


def test_no_secret_lands_anywhere(tmp_path, s3_endpoint, bucket):
    server_env = {**{k: v for k, v in SENTINELS.items() if k != "MLFLOW_TRACKING_PASSWORD"}, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    server = MlflowServer(tmp_path, free_port(), artifacts=f"s3://{bucket}/mlartifacts",
                          basic_auth_password=SENTINELS["MLFLOW_TRACKING_PASSWORD"], env=server_env)
    server.start(timeout=180)  # the auth app's first start migrates two databases: slow on 2 busy cores
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths have a length cap
    data = f"s3://{bucket}/digits"
    pack("digits", data, shard_size=500, resolution=32, endpoint_url=s3_endpoint, progress=False)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))},
        **{k: v for k, v in SENTINELS.items() if k != "MLFLOW_FLASK_SERVER_SECRET_KEY"},
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "disabled",
        "GANPIPE_RAY_LOGS": "1",  # worker logs reach the driver's output too: searched as printed
    }
    printed: list[tuple[str, bytes]] = []

    def ganpipe(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([*GANPIPE, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=420)
        finally:
            try:  # the child's own Ray processes, if it left any
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        printed.append((f"ganpipe {args[0]}", out))
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        return proc

    try:
        ganpipe("train", str(REPO / "jobs/quickstart.yaml"), "--no-progress",
                "--set", f"data.root={data}", "--set", "data.shuffle_buffer=32",
                "--set", "train.steps=4", "--set", "train.global_batch=8", "--set", "train.log_every=2",
                "--set", "train.sample_every=2", "--set", "train.checkpoint_every=2",
                "--set", f"checkpoint.storage_path=s3://{bucket}/runs",
                "--set", "tracking.registered_model=gan-secrets", "--set", "eval=null")
        ganpipe("sample", "models:/gan-secrets@champion", "-n", "4", "-o", str(tmp_path / "grid.png"))
    finally:
        server.stop()

    places = printed + local_files(tmp_path) + bucket_objects(s3_endpoint, bucket) + local_files(ray_tmp)
    names = [name for name, _ in places]
    # The search covered what it claims to: the run's artifacts, a checkpoint and the workers' logs.
    assert any(n.endswith("job.yaml") for n in names) and any("/runs/" in n and n.endswith("state.pt") for n in names)
    assert any(n.startswith(f"s3://{bucket}/mlartifacts/") and n.endswith("/MLmodel") for n in names), "no model files searched"
    assert any("worker" in n and n.endswith((".out", ".err", ".log")) for n in names), "no Ray worker log searched"
    assert occurrences([v.encode() for v in SENTINELS.values()], places) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)
