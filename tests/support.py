"""What several Ray tests share: a short quickstart job on freshly packed digits, and a training run
in a background thread that a test can poke (kill a worker, stop a server) while it runs."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from pipeline.data.pack import pack
from pipeline.spec import JobSpec, load_job
from pipeline.train.launch import TrainOutcome, train

REPO = Path(__file__).resolve().parents[1]


def short_job(tmp_path: Path, *, steps: int, batch: int, tracking_uri: str, registered_model: str, overrides=()) -> JobSpec:
    """jobs/quickstart.yaml on digits packed under tmp_path, shortened; no eval unless overridden."""
    pack("digits", str(tmp_path / "digits"), shard_size=500, resolution=32, progress=False)
    return load_job(REPO / "jobs/quickstart.yaml", [
        f"data.root={tmp_path / 'digits'}", "data.shuffle_buffer=32",
        f"train.steps={steps}", f"train.global_batch={batch}", "train.log_every=10",
        f"checkpoint.storage_path={tmp_path / 'ray_results'}", f"tracking.tracking_uri={tracking_uri}",
        f"tracking.registered_model={registered_model}", "eval=null", *overrides,
    ])


class BackgroundTraining:
    def __init__(self, spec: JobSpec, run_name: str):
        self.run_dir = Path(spec.checkpoint.storage_path) / run_name
        self._box: dict = {}
        self._thread = threading.Thread(target=lambda: self._box.update(out=train(spec, run_name=run_name, show_progress=False)))
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_until(self, condition, timeout: float = 240.0):
        """Poll condition() until it returns something truthy (returned) or the run ends (None)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.running:
            if value := condition():
                return value
            time.sleep(0.05)
        return None

    def finish(self, timeout: float = 600.0) -> TrainOutcome:
        self._thread.join(timeout)
        assert "out" in self._box, "training did not finish"
        return self._box["out"]


def pack_tiny(tmp_path_factory) -> str:
    """40 random 32 px images in 10 classes, packed into 2 shards: data that exist and validate, for
    tests about what happens around training rather than in it."""
    import numpy as np

    src = tmp_path_factory.mktemp("src") / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(src, images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), labels=np.arange(40) % 10)
    root = tmp_path_factory.mktemp("tiny")
    pack(str(src), str(root), shard_size=20, resolution=32, progress=False)
    return str(root)
