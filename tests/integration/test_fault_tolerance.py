"""A worker killed mid-run (SIGKILL, a real process death): Ray Train restarts the group, it resumes
from the last checkpoint, finishes, and no checkpoint, sample count or registered model is lost."""
import json
import os
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support import BackgroundTraining, short_job

pytestmark = pytest.mark.integration


def _train_worker_pids() -> list[int]:
    """PIDs of this test's Ray Train workers: descendants of this process titled ray::RayTrainWorker."""
    parent, title = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                title[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, t in title.items() if t.startswith("ray::RayTrainWorker") and ours(pid)]


def _registered_step(snapshot: Path) -> int | None:
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):
        return None
    return latest["metrics"]["step"] if latest else None


def test_killed_worker_resumes_from_checkpoint(tmp_path, ray_local):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    steps, batch = 400, 8  # long enough (~20 s) that the kill lands mid-run
    spec = short_job(tmp_path, steps=steps, batch=batch, tracking_uri=uri, registered_model="gan-ft",
                     overrides=["train.sample_every=1000", "train.checkpoint_every=20"])
    run = BackgroundTraining(spec, "ft")
    # Kill once the controller has registered a checkpoint (its snapshot file names it): a checkpoint
    # folder alone may not be registered yet, and a restart would then rightly begin from step 0.
    registered = run.wait_until(lambda: _registered_step(run.run_dir / "checkpoint_manager_snapshot.json"))
    assert registered is not None and registered < steps, "no checkpoint registered before the end"
    victims = _train_worker_pids()
    assert victims, "no Ray Train worker process found to kill"
    os.kill(victims[-1], signal.SIGKILL)
    out = run.finish()

    client = MlflowClient(tracking_uri=uri)
    resumed = client.get_metric_history(out.run_id, "train/resumed_from_step")
    assert resumed and resumed[-1].value >= registered and resumed[-1].value % 20 == 0
    seen = client.get_metric_history(out.run_id, "samples_seen")
    assert max(m.value for m in seen) == steps * batch  # resumed count, not restarted or doubled
    mv = client.get_model_version_by_alias("gan-ft", "champion")
    assert mv.tags["steps"] == str(steps)
