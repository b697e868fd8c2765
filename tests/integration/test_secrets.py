"""No secret lands anywhere: a real training job against a basic-auth MLflow server whose artifacts
live on the S3 endpoint, with sentinel values for every secret the project touches, then a byte
search of everywhere they could land; and every verb's failure paths (a credential typed into a URL,
S3 refusing the keys, the tracking server down), searched the same way.

Places searched: what every CLI call printed (and, in process, its traceback, log records and
warnings); the tracking server's databases and log; every object in the bucket (shards, checkpoints,
MLflow artifacts: params file, job.yaml, model files, sample grids); Ray's whole temp folder of the
training process (session logs of the driver and every worker). Each secret is searched as written,
URL-encoded and base64-encoded (tests/secrets_search.py). A submitted job's Ray logs are searched in
tests/integration/ops/test_cluster_check.py.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import yaml

from pipeline.data.pack import pack
from tests.integration.conftest import MlflowServer, free_port
from tests.secrets_search import SENTINELS, base64_cores, bucket_objects, local_files, needles, occurrences

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GANPIPE = [sys.executable, "-m", "pipeline"]
QUICKSTART = str(REPO / "jobs/quickstart.yaml")


def test_the_search_finds_a_planted_secret_in_every_spelling(tmp_path):
    import base64

    token, password = SENTINELS["AWS_SESSION_TOKEN"], SENTINELS["MLFLOW_TRACKING_PASSWORD"]
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "log.txt").write_bytes(b"...token=" + token.encode() + b"\n")
    (tmp_path / "url.txt").write_text(f"GET /x?token={quote(token, safe='')} HTTP/1.1")
    (tmp_path / "header.txt").write_bytes(b"Authorization: Basic " + base64.b64encode(f"admin:{password}".encode()))
    (tmp_path / "json.txt").write_bytes(base64.b64encode(f'{{"k": "{token}"}}'.encode()))  # another alignment
    assert sorted(occurrences(local_files(tmp_path))) == sorted([
        f"{tmp_path / 'deep' / 'log.txt'}: AWS_SESSION_TOKEN (as written)",
        f"{tmp_path / 'url.txt'}: AWS_SESSION_TOKEN (URL-encoded)",
        f"{tmp_path / 'header.txt'}: MLFLOW_TRACKING_PASSWORD (base64)",
        f"{tmp_path / 'json.txt'}: AWS_SESSION_TOKEN (base64)",
    ])
    assert all(len(core) >= 16 for value in SENTINELS.values() for core in base64_cores(value.encode()))
    assert len(needles(token)) >= 4  # as written, URL-encoded, 3 base64 alignments (some may coincide)


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
        proc.stdout = out
        return proc

    try:
        ganpipe("train", str(REPO / "jobs/quickstart.yaml"), "--no-progress",
                "--set", f"data.root={data}", "--set", "data.shuffle_buffer=32",
                "--set", "train.steps=4", "--set", "train.global_batch=8", "--set", "train.log_every=2",
                "--set", "train.sample_every=2", "--set", "train.checkpoint_every=2",
                "--set", f"checkpoint.storage_path=s3://{bucket}/runs",
                "--set", "tracking.registered_model=gan-secrets", "--set", "eval=null")
        ganpipe("sample", "models:/gan-secrets@champion", "-n", "4", "-o", str(tmp_path / "grid.png"))
        # The other verbs that read the bucket and the tracking server with the keys, on success:
        # scores from the S3 shards (a tiny classifier), and the registration again (found, not repeated).
        ganpipe("eval", "models:/gan-secrets@champion", "--data", data, "-n", "32", "--classifier-steps", "5",
                "--cache-dir", str(tmp_path / "cache"))
        trained = printed[0][1].decode()
        run_id = re.search(r"MLflow run\s+(\w+)", trained).group(1)
        checkpoint = re.search(r"checkpoint\s+(\S+)", trained).group(1)
        assert "already registered: models:/gan-secrets/1" in ganpipe("register", checkpoint, "--run", run_id).stdout.decode()
    finally:
        server.stop()

    places = printed + local_files(tmp_path) + bucket_objects(s3_endpoint, bucket) + local_files(ray_tmp)
    names = [name for name, _ in places]
    # The search covered what it claims to: the run's artifacts, a checkpoint and the workers' logs.
    assert any(n.endswith("job.yaml") for n in names) and any("/runs/" in n and n.endswith("state.pt") for n in names)
    assert any(n.startswith(f"s3://{bucket}/mlartifacts/") and n.endswith("/MLmodel") for n in names), "no model files searched"
    assert any("worker" in n and n.endswith((".out", ".err", ".log")) for n in names), "no Ray worker log searched"
    assert occurrences(places) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)


# -- failure paths ---------------------------------------------------------------------------------

KEY, SECRET, PASSWORD = SENTINELS["AWS_ACCESS_KEY_ID"], SENTINELS["AWS_SECRET_ACCESS_KEY"], SENTINELS["MLFLOW_TRACKING_PASSWORD"]
# Credentials typed into URLs the way a URL needs them: percent-encoded.
MLFLOW_WITH_PASSWORD = f"http://admin:{quote(PASSWORD, safe='')}@127.0.0.1:9"
S3_WITH_KEYS = f"s3://{KEY}:{quote(SECRET, safe='')}@bucket/digits"
CREDENTIALS = "credentials"  # every refusal of a URL with user:password@ says this word
S3_DENIED = ("InvalidAccessKeyId", "ACCESS_DENIED", "AccessDenied")
MLFLOW_DOWN = ("Connection refused", "unreachable")
CLUSTER_DOWN = ("cannot reach the Ray Jobs API",)


def _run_in_sqlite_with_s3_checkpoint(work: Path, tiny: str) -> tuple[str, str]:
    """(tracking URI, run id) of a run opened as `ganpipe train` opens one (job.yaml artifact), whose
    checkpoints are on S3: `ganpipe register` gets past MLflow and then reads S3."""
    from mlflow.tracking import MlflowClient

    from pipeline.spec import load_job

    uri = f"sqlite:///{work}/mlflow.db"
    spec = load_job(QUICKSTART, [f"data.root={tiny}", "checkpoint.storage_path=s3://bucket/runs", "tracking.registered_model=gan-secret-fail"])
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("secrets-fail"))
    client.log_text(run.info.run_id, yaml.safe_dump(spec.model_dump(mode="json")), "job.yaml")
    return uri, run.info.run_id


def test_no_secret_in_any_verbs_failure(tmp_path, monkeypatch, denying_s3, ray_head):
    """Each verb (train, submit, tune, eval, sample, promote, register, schedule tick) on each way it
    fails with secrets around: a credential typed into a URL (an argument, a --set, a job, search or
    schedule file, $MLFLOW_TRACKING_URI), S3 refusing the sentinel keys, the tracking server down.
    Each case must fail the way it is meant to (so the search covers that path), and nothing it
    printed, raised, logged or warned, nor any file it left, holds a secret in any spelling."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    inputs, work = tmp_path / "inputs", tmp_path / "work"  # inputs hold the typed secrets on purpose
    inputs.mkdir(), work.mkdir()
    monkeypatch.chdir(work)  # the default ./mlflow.db and ./ray_results land in the searched folder
    src = inputs / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(src, images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), labels=np.arange(40) % 10)
    tiny = str(work / "tiny")
    pack(str(src), tiny, shard_size=20, resolution=32, progress=False)
    for name, value in SENTINELS.items():
        if name != "MLFLOW_FLASK_SERVER_SECRET_KEY":
            monkeypatch.setenv(name, value)
    for name, value in {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "AWS_ENDPOINT_URL_S3": denying_s3}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sqlite_uri, run_id = _run_in_sqlite_with_s3_checkpoint(work, tiny)
    mlflow_down = f"http://127.0.0.1:{free_port()}"
    cluster = ray_head.dashboard_url

    def write(name: str, mapping: dict) -> str:
        (inputs / name).write_text(yaml.safe_dump(mapping, sort_keys=False))
        return str(inputs / name)

    search = {"name": "secret-search", "job": QUICKSTART, "trials": 1, "max_concurrent": 1,
              "set": [f"data.root={tiny}", "train.steps=20", "train.eval_every=10"], "space": {"regularization.r1.gamma": {"grid": [0.1]}}}
    schedule = {"name": "secret-schedule", "cron": "0 * * * *", "job": QUICKSTART, "data": tiny}
    files = {
        "job_ckpt_keys": write("job.yaml", {**yaml.safe_load(Path(QUICKSTART).read_text()),
                                            "checkpoint": {"storage_path": S3_WITH_KEYS.replace("/digits", "/runs")}}),
        "search_data_keys": write("search-keys.yaml", {**search, "set": [f"data.root={S3_WITH_KEYS}", *search["set"][1:]]}),
        "search_mlflow_pw": write("search-pw.yaml", {**search, "set": [*search["set"], f"tracking.tracking_uri={MLFLOW_WITH_PASSWORD}"]}),
        "search_s3": write("search-s3.yaml", {**search, "set": ["data.root=s3://bucket/digits", *search["set"][1:]]}),
        "schedule_keys": write("schedule-keys.yaml", {**schedule, "data": S3_WITH_KEYS}),
        "schedule_s3": write("schedule-s3.yaml", {**schedule, "data": "s3://bucket/digits"}),
        "schedule": write("schedule.yaml", schedule),
    }
    data = ["--set", f"data.root={tiny}"]
    cases = [  # (what, argv, extra environment, what the failure must say)
        # a credential typed into a URL
        ("train --set tracking_uri with password", ["train", QUICKSTART, *data, "--set", f"tracking.tracking_uri={MLFLOW_WITH_PASSWORD}"], {}, (CREDENTIALS,)),
        ("train job file: storage_path with keys", ["train", files["job_ckpt_keys"], *data], {}, (CREDENTIALS,)),
        ("submit --address with password", ["submit", QUICKSTART, *data, "--address", MLFLOW_WITH_PASSWORD.replace(":9", ":8265")], {}, (CREDENTIALS,)),
        ("submit search file: data.root with keys", ["submit", files["search_data_keys"], "--address", cluster], {}, (CREDENTIALS,)),
        ("tune search file: tracking_uri with password", ["tune", files["search_mlflow_pw"]], {}, (CREDENTIALS,)),
        ("eval --data with keys", ["eval", "models:/gan-secret-fail@champion", "--data", S3_WITH_KEYS], {}, (CREDENTIALS,)),
        ("eval --endpoint-url with keys", ["eval", "models:/m@champion", "--data", tiny, "--endpoint-url",
                                           f"http://{KEY}:{quote(SECRET, safe='')}@127.0.0.1:9"], {}, (CREDENTIALS,)),
        ("sample, $MLFLOW_TRACKING_URI with password", ["sample", "models:/m@champion", "-o", str(work / "g.png")],
         {"MLFLOW_TRACKING_URI": MLFLOW_WITH_PASSWORD}, (CREDENTIALS,)),
        ("promote --tracking-uri=... with password", ["promote", "m", "--candidate", "1", f"--tracking-uri={MLFLOW_WITH_PASSWORD}"], {}, (CREDENTIALS,)),
        ("register --tracking-uri with password", ["register", str(work / "ckpt"), "--run", run_id, "--tracking-uri", MLFLOW_WITH_PASSWORD], {}, (CREDENTIALS,)),
        ("schedule tick: schedule file data with keys", ["schedule", "tick", files["schedule_keys"], "--address", cluster,
                                                         "--tracking-uri", sqlite_uri], {}, (CREDENTIALS,)),
        # S3 refuses the sentinel keys
        ("train, S3 denied", ["train", QUICKSTART, "--set", "data.root=s3://bucket/digits", "--tracking-uri", sqlite_uri], {}, S3_DENIED),
        ("submit, S3 denied", ["submit", QUICKSTART, "--set", "data.root=s3://bucket/digits", "--address", cluster], {}, S3_DENIED),
        ("tune, S3 denied", ["tune", files["search_s3"], "--tracking-uri", sqlite_uri], {}, S3_DENIED),
        ("eval, S3 denied", ["eval", "models:/m@champion", "--data", "s3://bucket/digits"], {}, S3_DENIED),
        ("register, S3 checkpoint denied", ["register", "s3://bucket/runs/r/checkpoint_000000", "--run", run_id,
                                            "--tracking-uri", sqlite_uri], {}, S3_DENIED),
        ("schedule tick, S3 denied", ["schedule", "tick", files["schedule_s3"], "--address", cluster, "--tracking-uri", sqlite_uri], {}, S3_DENIED),
        # the tracking server is down (the cluster, for submit)
        ("train, MLflow down", ["train", QUICKSTART, *data, "--no-progress"], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("sample, MLflow down", ["sample", "models:/m@champion", "-o", str(work / "g.png")], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("eval, MLflow down", ["eval", "models:/m@champion", "--data", tiny], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("promote, MLflow down", ["promote", "m", "--candidate", "1"], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("register, MLflow down", ["register", str(work / "ckpt"), "--run", run_id], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("schedule tick, MLflow down", ["schedule", "tick", files["schedule"], "--address", cluster], {"MLFLOW_TRACKING_URI": mlflow_down}, MLFLOW_DOWN),
        ("submit, cluster down", ["submit", QUICKSTART, *data, "--address", mlflow_down], {"MLFLOW_TRACKING_URI": mlflow_down}, CLUSTER_DOWN),
    ]

    logged: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.emit = lambda record: logged.append(handler.format(record))  # message and traceback, as a log file gets them
    logging.getLogger().addHandler(handler)
    printed: list[tuple[str, bytes]] = []
    wrong: list[str] = []
    try:
        for what, argv, env, expected in cases:
            logged.clear()
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                t0 = time.monotonic()
                r = CliRunner().invoke(app, argv, env=env)
                took = time.monotonic() - t0
            raised = "".join(traceback.format_exception(r.exception)) if r.exception and not isinstance(r.exception, SystemExit) else ""
            text = "\n".join([r.output, raised, *logged, *[str(w.message) for w in warned]])
            printed.append((what, text.encode()))
            if r.exit_code == 0 or not any(e in text for e in expected):
                wrong.append(f"{what}: exit {r.exit_code} in {took:.1f} s, expected one of {expected}:\n{text[-1500:]}")
    finally:
        logging.getLogger().removeHandler(handler)

    assert not wrong, "\n\n".join(wrong)
    places = printed + local_files(work)
    assert any(name.endswith("mlflow.db") for name, _ in places)  # MLflow's params and tags were searched
    assert occurrences(places) == []
