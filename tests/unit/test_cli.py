"""The CLI's boundary: --dry-run resolves the spec, a bad spec exits non-zero before Ray starts."""
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if the CLI gets as far as launching training (Ray, MLflow)."""
    import pipeline.train.launch as launch

    def forbidden(*args, **kwargs):
        raise AssertionError("training was launched")

    monkeypatch.setattr(launch, "train", forbidden)


def test_dry_run_prints_the_resolved_spec_with_overrides(no_training):
    res = runner.invoke(app, ["train", str(REPO / "jobs/quickstart.yaml"), "--set", "train.steps=50", "--dry-run"])
    assert res.exit_code == 0, res.output
    resolved = yaml.safe_load(res.output)
    assert resolved["train"]["steps"] == 50
    assert resolved["model"]["z_dim"] == 100  # defaults are filled in


def test_bad_spec_fails_before_ray_naming_field_and_allowed_values(tmp_path, no_training):
    job = yaml.safe_load((REPO / "jobs/quickstart.yaml").read_text())
    job["loss"]["kind"] = "softmax"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 2
    assert "loss.kind" in res.output and "'softmax'" in res.output and "'hinge'" in res.output


def _verbs(group, prefix=()):
    """Every command path of the CLI, found by walking click's tree (so a new verb is covered too)."""
    yield list(prefix)
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _verbs(cmd, (*prefix, name))


def test_every_verb_has_help():
    import typer.main

    verbs = list(_verbs(typer.main.get_command(app)))
    for expected in (["train"], ["promote"], ["submit"], ["schedule", "tick"], ["tune"], ["data", "index"], ["runs"]):
        assert expected in verbs
    for verb in verbs:
        res = runner.invoke(app, verb + ["--help"])
        assert res.exit_code == 0 and "Usage" in res.output, verb
        doc = res.output.split("Usage", 1)[1]
        assert len(doc.strip().splitlines()) > 2, f"{verb}: no help text"
