"""Exact resume: a run interrupted after a checkpoint and resumed ends where an uninterrupted run ends.

The job is jobs/quickstart.yaml's model as it is (DCGAN at 32 px, batch norm in G, dropout 0.3 in D,
lazy R1, L2, EMA) on 2 workers, in `epoch` sampling mode, on 128 digits (16 steps per epoch), 24
steps with a checkpoint every 4. One uninterrupted reference run is shared by the module; then
- a worker is SIGKILLed after the first registered checkpoint: Ray Train restarts the group;
- the driver process (a separate `python -m pipeline train` with its own local Ray) is SIGKILLed
  with its whole process group, and `train(..., resume=...)` continues the run;
- Ctrl-C on a driver: the MLflow run is KILLED and the exact resume command is printed.
Each resumed run must end with G, D and EMA equal to the reference to 1e-6, in the same MLflow run,
with no metric logged twice, and (worker kill) having trained on each sample of the epoch once.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.pack import pack
from pipeline.spec import load_job
from pipeline.tracking import names
from pipeline.train.launch import train
from pipeline.train.runs import ResumeError, last_checkpoint_step
from pipeline.train.state import TrainState
from tests.processes import descendants, kill, processes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEPS, BATCH, EVERY, EPOCH_STEPS, SAMPLES = 24, 8, 4, 16, 128


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    pack("digits", str(root / "digits"), shard_size=64, resolution=32, progress=False)
    return root


def _overrides(root: Path, model: str) -> list[str]:
    return [
        f"data.root={root / 'digits'}", "data.shards=shard-{000000..000001}.tar", "data.sampling=epoch",
        "data.shuffle_buffer=32", f"train.steps={STEPS}", f"train.global_batch={BATCH}", "train.log_every=4",
        "train.sample_every=1000", f"train.checkpoint_every={EVERY}", f"checkpoint.storage_path={root / 'ray_results'}",
        f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}", f"tracking.registered_model={model}", "eval=null",
    ]


def _spec(root: Path, model: str):
    return load_job(REPO / "jobs/quickstart.yaml", _overrides(root, model))


@pytest.fixture(scope="module")
def reference(root, ray_local) -> TrainState:
    out = train(_spec(root, "gan-ref"), run_name="ref", show_progress=False, record_keys=str(root / "keys-ref"))
    return TrainState.load(out.checkpoint_path)


def _assert_same_training(final: TrainState, ref: TrainState) -> None:
    assert final.step == ref.step == STEPS
    assert final.samples_seen == ref.samples_seen == STEPS * BATCH
    for part in ("G", "D", "ema"):
        a, b = getattr(final, part), getattr(ref, part)
        assert a.keys() == b.keys()
        worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        assert worst <= 1e-6, f"{part} differs from the uninterrupted run by {worst:.3g}"
    assert any(k.endswith("running_var") for k in final.G), "the quickstart's G has batch norm"


def _registered_step(spec, run_name: str) -> int | None:
    return last_checkpoint_step(spec, run_name)


def _wait_for_checkpoint(spec, run_name: str, alive, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        if (step := _registered_step(spec, run_name)) is not None:
            return step
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint registered for {run_name} while it ran")


def _train_worker_pids() -> list[int]:
    return [pid for pid, cmd in descendants(os.getpid()).items() if cmd.startswith("ray::RayTrainWorker")]


def _effective_keys(folder: Path) -> dict[tuple[int, int], list[str]]:
    """(rank, step) → the keys that step trained on, taking each step's latest attempt."""
    attempts: dict[tuple[int, int], tuple[int, list[str]]] = {}
    for f in sorted(folder.glob("rank*.txt")):
        rank = int(f.stem.removeprefix("rank"))
        for line in f.read_text().splitlines():
            start, step, key = line.split(" ", 2)
            slot, start = (rank, int(step)), int(start)
            if slot not in attempts or attempts[slot][0] < start:
                attempts[slot] = (start, [])
            if attempts[slot][0] == start:
                attempts[slot][1].append(key)
    return {slot: keys for slot, (_, keys) in attempts.items()}


def _metric_steps(uri: str, run_id: str) -> list[int]:
    return sorted(int(m.step) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, names.SAMPLES_SEEN))


def test_killed_worker_resumes_exactly(root, reference, ray_local):
    spec = _spec(root, "gan-wk")
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(out=train(spec, run_name="wk", show_progress=False, record_keys=str(root / "keys-wk"))))
    thread.start()
    registered = _wait_for_checkpoint(spec, "wk", thread.is_alive)
    victims = _train_worker_pids()
    assert victims and registered < STEPS, "the kill must land mid-run"
    os.kill(victims[-1], signal.SIGKILL)
    thread.join(600)
    out = box["out"]

    _assert_same_training(TrainState.load(out.checkpoint_path), reference)
    uri = str(spec.tracking.tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_metric_history(out.run_id, names.RESUMED_FROM_STEP), "the group did restart"
    assert _metric_steps(uri, out.run_id) == list(range(4, STEPS + 1, 4)), "each log step once"

    # Every sample of the first epoch trained on exactly once, across the restart, in the same order
    # as the uninterrupted run.
    keys, ref_keys = _effective_keys(root / "keys-wk"), _effective_keys(root / "keys-ref")
    assert keys == ref_keys
    epoch0 = Counter(k for (rank, step), ks in keys.items() if step < EPOCH_STEPS for k in ks)
    assert len(epoch0) == SAMPLES and set(epoch0.values()) == {1}
    restarts = {int(line.split()[0]) for f in (root / "keys-wk").glob("rank*.txt") for line in f.read_text().splitlines()}
    assert max(restarts) >= registered, "steps after the checkpoint were trained again from it"


def _child(root: Path, name: str, log: Path, *extra: str) -> subprocess.Popen:
    sets = [a for o in _overrides(root, f"gan-{name}") for a in ("--set", o)]
    # RAY_ADDRESS=local: the child starts its own Ray (a separate driver cannot share this process's),
    # in its own process group so that killing the group takes its Ray with it.
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "train", "jobs/quickstart.yaml", *sets, "--name", name, *extra],
                            cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_driver_resumes_exactly(root, reference, ray_local):
    spec = _spec(root, "gan-drv")
    uri = spec.tracking.tracking_uri
    child = _child(root, "drv", root / "drv.log", "--no-progress")
    try:
        registered = _wait_for_checkpoint(spec, "drv", lambda: child.poll() is None)
        tree = descendants(child.pid)
        os.killpg(child.pid, signal.SIGKILL)  # the driver and the Ray it started: a closed laptop
        kill(tree)
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert registered < STEPS, (root / "drv.log").read_text()[-2000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id], "tags.`mlflow.runName` = 'drv'")
    assert run.info.status == "RUNNING"  # nobody was left to close it

    from typer.testing import CliRunner

    from pipeline.cli import app

    listed = CliRunner().invoke(app, ["runs", "jobs/quickstart.yaml", *[a for o in _overrides(root, "gan-drv") for a in ("--set", o)]])
    assert listed.exit_code == 0 and "drv" in listed.output and "--resume drv" in listed.output, listed.output
    with pytest.raises(ResumeError, match="--resume drv"):
        train(spec, run_name="drv", show_progress=False)  # a new run never picks up the old folder

    out = train(spec, resume="drv", show_progress=False)
    assert out.run_id == run.info.run_id and out.run_name == "drv"
    assert Path(out.checkpoint_path).parent == root / "ray_results" / "drv"
    _assert_same_training(TrainState.load(out.checkpoint_path), reference)
    assert client.get_run(out.run_id).info.status == "FINISHED"
    assert _metric_steps(uri, out.run_id) == list(range(4, STEPS + 1, 4)), "metrics continue, none doubled"
    versions = client.search_model_versions("name='gan-drv'")
    assert [v.tags.get(names.RUN_ID) for v in versions] == [out.run_id], "registered exactly once"
    with pytest.raises(ResumeError, match="finished"):
        train(spec, resume="drv", show_progress=False)


def test_ctrl_c_marks_killed_and_prints_the_resume_command(root):
    spec = _spec(root, "gan-cc")
    child = _child(root, "cc", root / "cc.log", "--no-progress")
    try:
        registered = _wait_for_checkpoint(spec, "cc", lambda: child.poll() is None)
        tree = descendants(child.pid)
        t0 = time.time()
        child.send_signal(signal.SIGINT)
        rc = child.wait(60)
        stopped_in = time.time() - t0
        deadline = time.time() + 20  # its Ray (and so the workers) goes down with it
        while time.time() < deadline and any(pid in processes() for pid in tree):
            time.sleep(0.2)
        left = [pid for pid in tree if pid in processes()]
        kill(left)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    output = (root / "cc.log").read_text()
    assert rc == 130 and stopped_in < 30, output[-3000:]
    assert not left, f"processes of the interrupted run still alive: {left}"
    client = MlflowClient(tracking_uri=spec.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id], "tags.`mlflow.runName` = 'cc'")
    assert run.info.status == "KILLED"
    step = last_checkpoint_step(spec, "cc")
    assert step is not None and step >= registered and f"step {step} of {STEPS}" in output
    command = next(line.split("resume with", 1)[1].strip() for line in output.splitlines() if "resume with" in line)
    sets = [a for o in _overrides(root, "gan-cc") for a in ("--set", o)]
    assert shlex.split(command) == [sys.executable, "-m", "pipeline", "train", "jobs/quickstart.yaml", *sets, "--resume", "cc"]
