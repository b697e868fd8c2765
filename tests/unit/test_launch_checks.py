"""train() refuses a broken data set before any Ray resource or MLflow run is taken."""
import os
from pathlib import Path

import pytest

import pipeline.train.launch as launch
from pipeline.data.errors import DataError
from pipeline.data.pack import pack
from pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_ray_no_mlflow(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("reached Ray or MLflow")

    monkeypatch.setattr(launch, "init_ray", forbidden)
    monkeypatch.setattr(launch, "open_run", forbidden)


def _spec(root, tmp_path):
    return load_job(REPO / "jobs/quickstart.yaml", [f"data.root={root}", f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"])


def test_missing_shard_fails_before_ray(tmp_path, no_ray_no_mlflow):
    pack("digits", str(tmp_path / "d"), shard_size=1000, resolution=32, progress=False)
    os.remove(tmp_path / "d" / "shard-000001.tar")
    with pytest.raises(DataError, match="missing shard.*shard-000001.tar"):
        launch.train(_spec(tmp_path / "d", tmp_path), show_progress=False)


def test_resolution_mismatch_fails_before_ray(tmp_path, no_ray_no_mlflow):
    pack("digits", str(tmp_path / "d"), shard_size=1000, resolution=16, progress=False)
    with pytest.raises(DataError, match="resolution"):
        launch.train(_spec(tmp_path / "d", tmp_path), show_progress=False)


def test_conditional_model_on_unlabelled_data_fails_before_ray(tmp_path, no_ray_no_mlflow):
    import numpy as np

    from pipeline.spec import SpecError

    np.savez(tmp_path / "x.npz", images=np.zeros((8, 32, 32, 3), dtype=np.uint8))  # no labels
    pack(str(tmp_path / "x.npz"), str(tmp_path / "d"), shard_size=8, resolution=32, progress=False)
    spec = load_job(REPO / "jobs/quickstart.yaml", [f"data.root={tmp_path / 'd'}", "model.conditional=true"])
    with pytest.raises(SpecError, match="model.conditional: true, but the data at .* have no class labels"):
        launch.train(spec, show_progress=False)
