"""The search file at the boundary: the example validates; a space that can produce an invalid job,
or a search that cannot report its metric, is refused naming the field, before Ray starts."""
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tune.spec import SearchError, load_search

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "jobs/searches/quickstart-r1.yaml"
runner = CliRunner()


def _search(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["job"] = str(REPO / "jobs/quickstart.yaml")
    raw.update(changes)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_example_search_validates_every_trial(tmp_path):
    search = load_search(EXAMPLE)
    s = search.spec
    assert s.name == "quickstart-r1" and s.metric == "fd" and s.scheduler.kind == "asha"
    assert "regularization.r1.gamma" in s.space and len(search.trials) == s.trials
    job = search.job_for(search.trials[0])
    r1 = next(r for r in job.regularization if r.kind == "r1")
    assert r1.weight == search.trials[0]["regularization.r1.gamma"]
    # Each eval is a report to Tune: the trial checkpoints at every eval.
    assert job.train.checkpoint_every == job.train.eval_every > 0
    assert Path(job.data.root).is_absolute() and Path(job.checkpoint.storage_path).is_absolute()


def test_a_space_that_can_give_a_negative_strength_is_refused(tmp_path):
    path = _search(tmp_path, space={"regularization.r1.gamma": {"uniform": [-0.5, 1.0]}})
    with pytest.raises(SearchError) as e:
        load_search(path)
    assert "regularization.1.r1.gamma" in str(e.value) and "greater than or equal to 0" in str(e.value)
    assert "regularization.r1.gamma=-0.5" in str(e.value)


def test_a_float_range_on_an_integer_field_is_refused_by_its_middle(tmp_path):
    path = _search(tmp_path, space={"model.z_dim": {"uniform": [64, 128]}})  # both ends are whole numbers
    with pytest.raises(SearchError, match="model.z_dim: Input should be a valid integer"):
        load_search(path)


@pytest.mark.parametrize("changes, message", [
    ({"space": {"loss.kind": {"choice": ["hinge"], "grid": ["hinge"]}}}, "space.loss.kind: give exactly one of"),
    ({"space": {"optim.d.lr": {"loguniform": [0, 1e-3]}}}, "loguniform needs lo > 0"),
    ({"space": {"optim.d.lr": {"uniform": [1e-3, 1e-4]}}}, "needs lo < hi"),
    ({"space": {"loss.kind": {"choice": ["softmax"]}}}, "loss.kind: Input should be 'nonsaturating'"),
    ({"space": {"regularization.dropout.rate": {"choice": [0.1]}}}, "unknown regularizer kind 'dropout'"),
    ({"space": {"checkpoint.storage_path": {"choice": ["/x"]}}}, "does not vary where runs are stored"),
    ({"metric": "fid"}, "metric: Input should be 'fd' or 'kid'"),
    ({"set": ["train.eval_every=0"]}, "set 0 < train.eval_every < train.steps"),
    ({"set": ["eval=null"]}, "no `eval` section"),
    ({"scheduler": {"kind": "asha", "grace_period": 99}}, "no trial could be stopped early"),
])
def test_bad_searches_are_refused_naming_the_field(tmp_path, changes, message):
    with pytest.raises(SearchError, match=message):
        load_search(_search(tmp_path, **changes))


@pytest.fixture
def no_search(monkeypatch):
    import pipeline.tune.driver as driver

    def forbidden(*args, **kwargs):
        raise AssertionError("the search was started")

    monkeypatch.setattr(driver, "run_search", forbidden)


def test_cli_refuses_a_bad_space_before_ray_starts(tmp_path, no_search, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", no_ray)
    res = runner.invoke(app, ["tune", str(_search(tmp_path, space={"regularization.l2.weight": {"uniform": [-1, 1]}}))])
    assert res.exit_code == 2, res.output
    assert "regularization.0.l2.weight" in res.output and "can produce an invalid job spec" in res.output


def test_cli_dry_run_lists_the_trials(tmp_path, no_search):
    res = runner.invoke(app, ["tune", str(EXAMPLE), "--dry-run"])
    assert res.exit_code == 0, res.output
    search = load_search(EXAMPLE)
    assert f"{len(search.trials)} trials" in res.output and "regularization.r1.gamma" in res.output
    assert f"{search.trials[0]['regularization.r1.gamma']:.4g}" in res.output
    assert "every trial's job spec is valid" in res.output


def test_tune_has_help():
    res = runner.invoke(app, ["tune", "--help"])
    assert res.exit_code == 0 and "Usage" in res.output and "--resume" in res.output
