"""Interrupt and continue through the CLI, as typed, with periodic evaluation on (issue 16 §1).

`ganpipe train` (the installed entry point) runs jobs/quickstart.yaml's model on 2 workers, epoch
sampling, 16 steps with a checkpoint, a log line and an evaluation every 4. It is interrupted after
its first registered checkpoint and continued with the command a user is given:
- Ctrl-C typed into a pseudo-terminal (the progress bar drawn; the terminal sends SIGINT to the
  driver's whole foreground process group), then the printed resume command, run verbatim;
- SIGKILL of the driver's main process (a crash: nothing printed), then the command `ganpipe runs`
  prints for it, run verbatim.
Each continued run must end in the same MLflow run, FINISHED, with every log step and every eval
step logged once, its eval curve equal to an uninterrupted run's, and a registered generator equal
to that run's to 1e-6 on the same z.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import torch
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
BIN = Path(sys.executable).parent
STEPS, EVERY = 16, 4
EVAL_STEPS = list(range(EVERY, STEPS + 1, EVERY))  # log, eval and checkpoint steps alike


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume-cli")
    pack("digits", str(root / "digits"), shard_size=64, resolution=32, progress=False)
    return root


def _overrides(root: Path, model: str) -> list[str]:
    return [
        f"data.root={root / 'digits'}", "data.shards=shard-{000000..000001}.tar", "data.sampling=epoch",
        "data.shuffle_buffer=32", f"train.steps={STEPS}", "train.global_batch=8", f"train.log_every={EVERY}",
        "train.sample_every=1000", f"train.checkpoint_every={EVERY}", f"train.eval_every={EVERY}",
        f"checkpoint.storage_path={root / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.registered_model={model}",
        # A small evaluator: the classifier extractor trained once (cached for every run of the module).
        "eval.num_samples=64", "eval.classifier_steps=20", f"eval.cache_dir={root / 'cache'}",
    ]


def _argv(root: Path, model: str) -> list[str]:
    return ["train", "jobs/quickstart.yaml", *[a for o in _overrides(root, model) for a in ("--set", o)]]


def _env() -> dict[str, str]:
    # As a user's shell with the venv active: `ganpipe` on PATH. RAY_ADDRESS=local: each driver starts
    # its own Ray, as on a laptop (this process's Ray cannot be shared by another driver).
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_ADDRESS": "local",
            "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def reference(root, ray_local) -> dict:
    """The uninterrupted run (in process: the same training as the CLI's), shared by the cases."""
    out = train(load_job(REPO / "jobs/quickstart.yaml", _overrides(root, "gan-ref")), run_name="ref", show_progress=False)
    uri = out.tracking_uri
    return {"state": TrainState.load(out.checkpoint_path), "images": _registered_images(uri, "gan-ref"),
            "fd": _history(uri, out.run_id, names.EVAL_FD)}


def _registered_images(uri: str, model: str) -> torch.Tensor:
    mlflow.set_tracking_uri(uri)
    (version,) = MlflowClient(tracking_uri=uri).search_model_versions(f"name='{model}'")
    generator = mlflow.pytorch.load_model(f"models:/{model}/{version.version}")
    z = torch.randn(16, 100, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return generator(z)


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((int(m.step), m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def _wait_for_checkpoint(spec, run_name: str, child: subprocess.Popen, shown, timeout: float = 300) -> int:
    """The first checkpoint's step, while `child` runs; else fail with what it printed (`shown()`)."""
    deadline = time.time() + timeout
    while time.time() < deadline and child.poll() is None:
        if (step := last_checkpoint_step(spec, run_name)) is not None:
            return step
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint registered for {run_name} while it ran; it printed:\n{shown()[-3000:]}")


# Ray's per-node agents notice a dead raylet by a periodic check and exit a minute or so later
# (measured here: 60-70 s after a driver's SIGKILL); they hold no training state and no resources.
SLOW_TO_GO = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _wait_gone(tree: dict[int, str], timeout: float = 30) -> list[str]:
    """The processes in `tree` (but Ray's agents) still alive after `timeout`: a driver's Ray, its
    workers and the training go down with it. Everything left is killed, so no case leaves any."""
    deadline = time.time() + timeout
    while time.time() < deadline and _alive(tree):
        time.sleep(0.2)
    late = _alive(tree)
    kill([pid for pid in tree if pid in processes()])
    return late


def _alive(tree: dict[int, str]) -> list[str]:
    return [f"{pid} {cmd.strip()[:120]}" for pid, (_, cmd) in processes().items() if pid in tree and not cmd.startswith(SLOW_TO_GO)]


def _continue(command: str, log: Path, ray_address: str) -> str:
    """Run a printed command verbatim, as pasted into a shell. It joins this session's Ray (as a
    user's resume joins a cluster at $RAY_ADDRESS) rather than start one: tens of seconds saved."""
    env = {**_env(), "RAY_ADDRESS": ray_address}
    r = subprocess.run(command, shell=True, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, timeout=600)
    output = log.read_text()
    assert r.returncode == 0, output[-3000:]
    return output


def _assert_continued(root: Path, name: str, output: str, run_id: str, reference: dict) -> None:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id], f"tags.`mlflow.runName` = '{name}'")
    assert run.info.run_id == run_id and run.info.status == "FINISHED", "one MLflow run, finished"
    assert f"MLflow run      {run_id}" in output
    assert [s for s, _ in _history(uri, run_id, names.SAMPLES_SEEN)] == EVAL_STEPS, "each log step once"
    fd = _history(uri, run_id, names.EVAL_FD)
    assert [s for s, _ in fd] == EVAL_STEPS, f"the eval curve has a gap or a repeat: {fd}"
    # The scores are the same generators' scores, whichever process computed them.
    assert [v for _, v in fd] == pytest.approx([v for _, v in reference["fd"]], rel=1e-4), (fd, reference["fd"])
    assert client.get_metric_history(run_id, names.RESUMED_FROM_STEP), "it did continue from a checkpoint"
    versions = client.search_model_versions(f"name='gan-{name}'")
    assert [v.tags.get(names.RUN_ID) for v in versions] == [run_id], "registered exactly once"

    checkpoint = re.search(r"checkpoint\s+(\S+)", output).group(1)
    final, ref = TrainState.load(checkpoint), reference["state"]
    assert final.step == ref.step == STEPS
    for part in ("G", "D", "ema"):
        a, b = getattr(final, part), getattr(ref, part)
        worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        assert worst <= 1e-6, f"{part} differs from the uninterrupted run by {worst:.3g}"
    images = _registered_images(uri, f"gan-{name}")
    assert (images - reference["images"]).abs().max().item() <= 1e-6, "the registered generator differs"


def test_ctrl_c_in_a_terminal_then_the_printed_command(root, reference, ray_local):
    name = "tty"
    spec = load_job(REPO / "jobs/quickstart.yaml", _overrides(root, f"gan-{name}"))
    master, slave = os.openpty()

    def controlling_terminal():  # after setsid: the pty becomes this session's terminal, as a shell's is
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(["ganpipe", *_argv(root, f"gan-{name}"), "--name", name], cwd=REPO, env=_env(),
                             stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=controlling_terminal)
    os.close(slave)
    seen = bytearray()

    def read():  # keep draining the terminal, or the driver blocks on a full pty buffer
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        registered = _wait_for_checkpoint(spec, name, child, lambda: seen.decode(errors="replace"))
        tree = descendants(child.pid)
        os.write(master, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground process group
        rc = child.wait(90)
        left = _wait_gone(tree)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    reader.join(10)
    os.close(master)
    output = seen.decode(errors="replace")
    assert rc == 130 and registered < STEPS, output[-3000:]
    assert not left, f"processes of the interrupted run still alive: {left}"
    assert "━" in output and "\x1b[" in output, "the progress bar was drawn on the terminal"
    lines = output.replace("\r", "\n").splitlines()
    command = next(line.split("resume with", 1)[1].strip() for line in lines if "resume with" in line)
    assert shlex.split(command) == ["ganpipe", *_argv(root, f"gan-{name}"), "--resume", name]
    client = MlflowClient(tracking_uri=spec.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id], f"tags.`mlflow.runName` = '{name}'")
    assert run.info.status == "KILLED"

    output = _continue(command, root / f"{name}-resumed.log", ray_local.get_runtime_context().gcs_address)
    _assert_continued(root, name, output, run.info.run_id, reference)


def test_killed_driver_then_the_command_ganpipe_runs_prints(root, reference, ray_local):
    name = "crash"
    spec = load_job(REPO / "jobs/quickstart.yaml", _overrides(root, f"gan-{name}"))
    log = root / f"{name}.log"
    child = subprocess.Popen(["ganpipe", *_argv(root, f"gan-{name}"), "--name", name, "--no-progress"], cwd=REPO, env=_env(),
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        registered = _wait_for_checkpoint(spec, name, child, log.read_text)
        tree = descendants(child.pid)
        os.kill(child.pid, signal.SIGKILL)  # the driver only: its Ray must not outlive it
        child.wait(30)
        left = _wait_gone(tree)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert registered < STEPS, log.read_text()[-3000:]
    assert not left, f"processes of the killed driver still alive: {left}"
    client = MlflowClient(tracking_uri=spec.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id], f"tags.`mlflow.runName` = '{name}'")
    assert run.info.status == "RUNNING"  # nobody was left to close it

    # What the README tells a user whose driver died: `ganpipe runs` with the same job and overrides.
    runs = subprocess.run(["ganpipe", "runs", *_argv(root, f"gan-{name}")[1:]], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert runs.returncode == 0, runs.stdout + runs.stderr
    command = next(line.strip() for line in runs.stdout.splitlines() if line.strip().endswith(f"--resume {name}"))
    with pytest.raises(ResumeError, match=f"--resume {name}"):
        train(spec, run_name=name, show_progress=False)  # a new run never picks up the old run's folder
    output = _continue(command, root / f"{name}-resumed.log", ray_local.get_runtime_context().gcs_address)
    _assert_continued(root, name, output, run.info.run_id, reference)
    with pytest.raises(ResumeError, match="finished"):
        train(spec, resume=name, show_progress=False)
