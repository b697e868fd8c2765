"""Exact resume: a run interrupted after a checkpoint and resumed ends where an uninterrupted run ends.

The job is jobs/quickstart.yaml's model as it is (DCGAN at 32 px, batch norm in G, dropout 0.3 in D,
lazy R1, L2, EMA) on 2 workers, in `epoch` sampling mode, on 128 digits (16 steps per epoch), 24
steps with a checkpoint every 4. One uninterrupted reference run is shared by the module; then
- a worker is SIGKILLed after the first registered checkpoint: Ray Train restarts the group;
(the driver SIGKILLed, and Ctrl-C on a driver, are tested through the CLI as typed, with evaluation
on: test_resume_cli.py.)
The resumed run must end with G, D and EMA equal to the reference to 1e-6, in the same MLflow run,
with no metric logged twice, and (worker kill) having trained on each sample of the epoch once.
"""
from __future__ import annotations

import os
import signal
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
from pipeline.train.runs import last_checkpoint_step
from pipeline.train.state import TrainState
from tests.processes import descendants

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
