"""A failing `ganpipe train`, `schedule tick` or `data pack` says what is wrong in one line, as typed
(issue 16 §4): S3 refusing the keys (a real moto server that checks signatures), and the MLflow
tracking server down (a closed port). Exit 2, one `error:` line naming the problem, no traceback,
no secret in what was printed, and quickly: MLflow's own retries on a closed port take minutes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import free_port
from tests.secrets_search import SENTINELS, occurrences
from tests.support import pack_tiny

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GANPIPE = str(Path(sys.executable).parent / "ganpipe")
QUICKSTART = str(REPO / "jobs/quickstart.yaml")
S3_DENIED = "S3 refused access to s3://bucket/digits/manifest.json (InvalidAccessKeyId)"
MLFLOW_DOWN = "MLflow tracking server at {uri} is unreachable"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    return pack_tiny(tmp_path_factory)


def _schedule(tmp_path: Path, name: str, data: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "cron": "* * * * *", "job": QUICKSTART, "data": data}))
    return str(path)


def _cases(tmp_path: Path, tiny_root: str, cluster: str):
    sqlite = f"sqlite:///{tmp_path}/mlflow.db"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return [  # (what, argv, extra environment, the problem the one line must name)
        ("train, S3 denied", ["train", QUICKSTART, "--set", "data.root=s3://bucket/digits", "--tracking-uri", sqlite], {}, S3_DENIED),
        ("train, MLflow down", ["train", QUICKSTART, "--set", f"data.root={tiny_root}", "--tracking-uri", down], {},
         MLFLOW_DOWN.format(uri=down)),
        ("schedule tick, S3 denied", ["schedule", "tick", _schedule(tmp_path, "denied", "s3://bucket/digits"), "--address", cluster,
                                      "--tracking-uri", sqlite], {}, S3_DENIED),
        ("data pack, S3 denied", ["data", "pack", "digits", "--out", "s3://bucket/packed", "--quiet"], {},
         "S3 refused access to s3://bucket/packed/"),
        ("schedule tick, MLflow down", ["schedule", "tick", _schedule(tmp_path, "down", tiny_root), "--address", cluster],
         {"MLFLOW_TRACKING_URI": down}, MLFLOW_DOWN.format(uri=down)),
    ]


def test_train_tick_and_pack_fail_in_one_line_without_a_traceback(tmp_path, tiny_root, denying_s3, ray_head):
    env = {**os.environ, **{k: v for k, v in SENTINELS.items() if k != "MLFLOW_FLASK_SERVER_SECRET_KEY"},
           "AWS_ENDPOINT_URL_S3": denying_s3, "MLFLOW_TRACKING_USERNAME": "admin", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    wrong = []
    for what, argv, extra, problem in _cases(tmp_path, tiny_root, ray_head.dashboard_url):
        t0 = time.monotonic()
        r = subprocess.run([GANPIPE, *argv], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
        said = f"{what}: exit {r.returncode} in {took:.0f} s:\n{r.stdout}{r.stderr}"
        if r.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or problem not in lines[0]:
            wrong.append(said)
        elif "Traceback" in r.stdout + r.stderr or took > 30:
            wrong.append(said)
        elif found := occurrences([(what, (r.stdout + r.stderr).encode())]):
            wrong.append(f"{what}: a secret in the output: {found}")
    assert not wrong, "\n\n".join(wrong)


def test_pack_with_read_only_keys_fails_in_one_line(tmp_path, read_only_s3):
    # Keys that may list and read the bucket get as far as the upload, which S3 refuses: boto3 wraps
    # that answer in its own S3UploadFailedError, whose text quotes S3's.
    url, keys = read_only_s3
    env = {**os.environ, **keys, "AWS_ENDPOINT_URL_S3": url}
    r = subprocess.run([GANPIPE, "data", "pack", "digits", "--out", "s3://bucket/packed", "--quiet"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert lines[0].startswith("error: S3 refused access to s3://bucket/packed/") and "(AccessDenied)" in lines[0], lines[0]
    assert keys["AWS_ACCESS_KEY_ID"] not in r.stdout + r.stderr
