"""A search end to end on real Ray Tune + Ray Train, killed and resumed on the way.

4 trials of the quickstart model on the digits, 1 worker each, 2 at once, 18 steps with FD every 6
(64 samples), ASHA with a grace of one eval. The space: one loguniform draw of R1's gamma (addressed
by kind) crossed with a grid of G learning rates, two sound ones first and two far too large: every
trial reaches its first eval after at least one sound trial recorded its score there (only two run
at once), so ASHA must stop the large ones, which are ~25 FD worse at step 6 (training is
deterministic on one worker). The driver is a subprocess with its own Ray; it is killed with its
process group once Tune has recorded a finished trial, and `ganpipe tune --resume` finishes the
search in this process. Then: finished trials were not rerun, a trial with a checkpoint continued
from it, early stops, parent and child runs, best job file, exactly one registered version.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.pack import pack
from pipeline.spec import load_job
from pipeline.tune import tracking
from tests.processes import descendants, kill

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 18, 6
SOUND, TOO_LARGE = [2.0e-4, 1.0e-4], [0.5, 1.0]
MODEL = "gan-tune-test"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    pack("digits", str(root / "digits"), shard_size=500, resolution=32, progress=False)
    search = {
        "name": "tiny-r1",
        "job": str(REPO / "jobs/quickstart.yaml"),
        "set": [
            f"data.root={root / 'digits'}", "data.shuffle_buffer=32", "scaling.num_workers=1",
            f"train.steps={STEPS}", "train.global_batch=16", f"train.log_every={EVERY}", "train.sample_every=1000",
            f"train.eval_every={EVERY}", "eval.num_samples=64", "eval.classifier_steps=30", f"eval.cache_dir={root / 'cache'}",
            f"checkpoint.storage_path={root / 'ray_results'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.registered_model={MODEL}", "tracking.grid_size=16", "tracking.experiment=tune-test",
        ],
        "space": {
            "regularization.r1.gamma": {"loguniform": [0.01, 1.0]},
            "optim.g.lr": {"grid": SOUND + TOO_LARGE},
        },
        "trials": 1,
        "metric": "fd",
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "max_concurrent": 2,
        "winner": "register",
    }
    (root / "search.yaml").write_text(yaml.safe_dump(search, sort_keys=False))
    return root


def _experiment_dir(root: Path) -> Path | None:
    found = [Path(p).parent for p in glob.glob(str(root / "ray_results" / "*" / "tuner.pkl"))]
    return found[0] if found else None


def _tune_states(root: Path) -> dict[str, str]:
    """trial id → status, as Tune last saved its experiment (what a restore will see)."""
    exp = _experiment_dir(root)
    files = sorted(glob.glob(str(exp / "experiment_state-*.json"))) if exp else []
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except ValueError:  # caught mid-write
        return {}
    return {t["trial_id"]: t["status"] for t in (json.loads(entry[0]) for entry in state["trial_data"])}


def _snapshot(path: Path) -> bytes | None:
    f = path / "checkpoint_manager_snapshot.json"
    return f.read_bytes() if f.exists() else None


def _checkpoint_step(path: Path) -> int | None:
    data = _snapshot(path)
    latest = (json.loads(data).get("latest_checkpoint_result") or {}) if data else {}
    return (latest.get("metrics") or {}).get("step")


def test_search_killed_and_resumed_stops_early_and_registers_the_winner(root, ray_local):
    uri = f"sqlite:///{root / 'mlflow.db'}"
    search_file = root / "search.yaml"
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    log = root / "first.log"
    child = subprocess.Popen([sys.executable, "-m", "pipeline", "tune", str(search_file), "--no-progress"], cwd=root, env=env,
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 900
        while time.time() < deadline and child.poll() is None:
            if "TERMINATED" in _tune_states(root).values():
                break
            time.sleep(0.2)
        states = _tune_states(root)
        tree = descendants(child.pid)
        os.killpg(child.pid, signal.SIGKILL)  # the driver and the Ray it started
        kill(tree)
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    finished = {t for t, s in states.items() if s == "TERMINATED"}
    assert finished and len(finished) < 4, (states, log.read_text()[-3000:])
    exp = _experiment_dir(root)
    search_id = exp.name
    client = MlflowClient(tracking_uri=uri)
    fd_before = {t: [(m.step, m.value) for m in client.get_metric_history(
        tracking.find_trial_run(tracking_uri=uri, experiment="tune-test", search_id=search_id, trial_id=t).info.run_id, "eval/fd")]
        for t in finished}
    snapshots = {t: _snapshot(exp / f"{t}-train") for t in finished}
    with_checkpoint = {t: _checkpoint_step(exp / f"{t}-train") for t in states if t not in finished}
    with_checkpoint = {t: s for t, s in with_checkpoint.items() if s is not None}

    best_file = root / "best.yaml"
    res = CliRunner().invoke(app, ["tune", str(search_file), "--resume", "--no-progress", "--best-spec", str(best_file)])
    assert res.exit_code == 0, res.output + repr(res.exception)

    # Finished trials were not run again: their function started once, their scores and their Train
    # run's last checkpoint are as they were. Unfinished trials started again, and one with a
    # checkpoint continued from it (rank 0 logs the step it resumed from).
    children = tracking.trial_runs(tracking_uri=uri, experiment="tune-test", search_id=search_id)
    assert len(children) == 4
    for t in finished:
        assert children[t].data.tags[tracking.TRIAL_STARTS] == "1", f"trial {t} was run again"
        assert [(m.step, m.value) for m in client.get_metric_history(children[t].info.run_id, "eval/fd")] == fd_before[t]
        assert not client.get_metric_history(children[t].info.run_id, "train/resumed_from_step")
        assert _snapshot(exp / f"{t}-train") == snapshots[t]
    for t, step in with_checkpoint.items():
        assert children[t].data.tags[tracking.TRIAL_STARTS] == "2"
        resumed = client.get_metric_history(children[t].info.run_id, "train/resumed_from_step")
        assert resumed and resumed[-1].value >= step, (t, step)

    # Parent and nested child runs, with the searched values as params.
    (parent,) = client.search_runs([client.get_experiment_by_name("tune-test").experiment_id],
                                   f"tags.`{tracking.SEARCH}` = '{search_id}' and tags.`{tracking.ROLE}` = 'parent'")
    assert parent.info.status == "FINISHED"
    gammas = set()
    for run in children.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT_RUN_ID] == parent.info.run_id
        p = run.data.params
        gammas.add(p["tune.regularization.r1.gamma"])
        assert float(p["regularization.1.weight"]) == float(p["tune.regularization.r1.gamma"])  # R1 is entry 1
        assert float(p["optim.g.lr"]) == float(p["tune.optim.g.lr"])
    assert len(gammas) == 1 and 0.01 <= float(gammas.pop()) <= 1.0  # one draw, crossed with the 4-value grid
    assert sorted(float(r.data.params["optim.g.lr"]) for r in children.values()) == sorted(SOUND + TOO_LARGE)

    # ASHA stopped the hopeless trials at their first eval (Tune's results table; the stopped workers may
    # log a little further before the abort reaches them). A sound trial may be stopped too, at a later
    # rung, when the other sound one reached it first with a better score.
    table = client.download_artifacts(parent.info.run_id, "results.csv", str(root))
    rows = {r["trial_id"]: r for r in csv.DictReader(open(table))}
    assert set(rows) == set(children)
    stopped = {t for t, r in rows.items() if r["state"] == "stopped early"}
    for t, row in rows.items():
        if float(row["optim.g.lr"]) in TOO_LARGE:
            assert t in stopped and int(row["last_step"]) == EVERY, row
        assert row["state"] in ("done", "stopped early") and (int(row["last_step"]) < STEPS) == (t in stopped), row
        assert children[t].data.tags[tracking.STOPPED_EARLY] == str(t in stopped).lower()
    assert len(stopped) < 4

    # The best trial: lowest final FD among the trials that ran to the end; its job as a file.
    final_fd = {t: float(r["fd"]) for t, r in rows.items() if t not in stopped}
    best = min(final_fd, key=final_fd.get)
    assert parent.data.tags[tracking.BEST_TRIAL_ID] == best
    assert parent.data.tags[tracking.BEST_RUN_ID] == children[best].info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "best_job.yaml", "search.yaml"} <= artifacts
    job = load_job(best_file)  # `ganpipe train` takes it as is
    assert job.optim.g.lr == float(children[best].data.params["optim.g.lr"])
    assert next(r for r in job.regularization if r.kind == "r1").weight == float(children[best].data.params["tune.regularization.r1.gamma"])

    # Exactly one version registered, from the best trial's run, tagged with the search and trial.
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 1
    v = versions[0]
    assert v.tags[tracking.SEARCH] == search_id and v.tags[tracking.TRIAL_ID] == best
    assert v.tags["run_id"] == children[best].info.run_id
