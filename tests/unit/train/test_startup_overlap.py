"""The driver starts Ray while it opens the MLflow run (train/launch.py), and cleans up after either
side fails: a run that cannot open stops the Ray it started, a Ray that cannot start fails the run."""
from pathlib import Path
import threading

import pytest

import pipeline.train.launch as launch
from pipeline.data.pack import pack
from pipeline.spec import load_job
from pipeline.train.background import Background

REPO = Path(__file__).resolve().parents[3]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "d"
    pack("digits", str(root), shard_size=1000, resolution=32, progress=False)
    return root


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Ray, the MLflow run and the fit replaced by recorders; `events` lists what happened, in order."""
    events: list[str] = []
    run_opened = threading.Event()

    def open_run(**kwargs):
        events.append("open_run")
        run_opened.set()
        return "run-id"

    def init_ray(timeout_s):
        events.append("init_ray start")
        # Serial code would open the run only after this returns: the wait would time out.
        events.append("run opened meanwhile" if run_opened.wait(timeout=60) else "run not opened meanwhile")
        return True

    def fit(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(launch, "open_run", open_run)
    monkeypatch.setattr(launch, "init_ray", init_ray)
    monkeypatch.setattr(launch, "_fit", fit)
    monkeypatch.setattr(launch, "_scheduling_failure", lambda e: False)
    monkeypatch.setattr(launch, "end_run", lambda uri, run_id, status: events.append(f"end_run {status}"))
    monkeypatch.setattr(launch, "_stop_ray", lambda started: events.append(f"stop_ray {started}"))
    return events


def _spec(root, tmp_path):
    return load_job(REPO / "jobs/quickstart.yaml", [
        f"data.root={root}", f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db",
        f"checkpoint.storage_path={tmp_path}/runs",
    ])


def test_the_run_opens_while_ray_starts(digits, tmp_path, fakes):
    with pytest.raises(Stop):
        launch.train(_spec(digits, tmp_path), show_progress=False)
    assert fakes[:3] == ["init_ray start", "open_run", "run opened meanwhile"]
    assert fakes[-1] == "end_run FAILED"


def test_a_run_that_cannot_open_stops_the_ray_it_started(digits, tmp_path, fakes, monkeypatch):
    def refuse(**kwargs):
        fakes.append("open_run refused")
        raise RuntimeError("refused")

    monkeypatch.setattr(launch, "open_run", refuse)
    monkeypatch.setattr(launch, "init_ray", lambda timeout_s: True)
    with pytest.raises(RuntimeError, match="refused"):
        launch.train(_spec(digits, tmp_path), show_progress=False)
    assert fakes == ["open_run refused", "stop_ray True"]


def test_a_ray_that_cannot_start_fails_the_open_run(digits, tmp_path, fakes, monkeypatch):
    def no_ray(timeout_s):
        raise ConnectionError("no cluster at RAY_ADDRESS")

    monkeypatch.setattr(launch, "init_ray", no_ray)
    with pytest.raises(ConnectionError, match="no cluster"):
        launch.train(_spec(digits, tmp_path), show_progress=False)
    assert fakes == ["open_run", "end_run FAILED"]


def test_background_returns_the_value_or_raises_the_error_in_the_caller():
    assert Background(lambda a, b=0: a + b, 1, b=2).result() == 3
    with pytest.raises(KeyError):
        Background(lambda: {}["x"]).result()
