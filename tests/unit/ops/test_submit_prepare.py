"""What `ganpipe submit` checks and sends, before any cluster is involved: a bad spec or missing data
is refused here; what travels is the package and the resolved job file only; no secret is sent."""
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.errors import DataError
from pipeline.ops import submit as ops
from pipeline.spec import SpecError
from tests.support import pack_tiny

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "jobs/quickstart.yaml"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    return pack_tiny(tmp_path_factory)


def test_bad_spec_is_refused_naming_the_field(tiny_root):
    with pytest.raises(SpecError, match=r"train.steps: Input should be greater than or equal to 1"):
        ops.prepare(QUICKSTART, [f"data.root={tiny_root}", "train.steps=0"])


def test_missing_data_is_refused_before_submission(tmp_path):
    with pytest.raises(DataError, match="manifest"):
        ops.prepare(QUICKSTART, [f"data.root={tmp_path / 'nowhere'}"])


def test_cli_refuses_bad_spec_without_contacting_a_cluster(tiny_root):
    # The address points at a closed port: reaching it would fail differently (and later).
    r = CliRunner().invoke(app, ["submit", str(QUICKSTART), "--address", "http://127.0.0.1:9", "--set", f"data.root={tiny_root}",
                                 "--set", "loss.kind=hinge-ish"])
    assert r.exit_code == 2 and "loss.kind" in r.output and "cannot reach" not in r.output


def test_staged_upload_is_the_package_and_the_resolved_job_only(tiny_root, tmp_path):
    sub = ops.prepare(QUICKSTART, [f"data.root={tiny_root}", "train.steps=7"], submission_id="qs-1")
    files = ops.stage(sub, tmp_path)
    assert "job.yaml" in files and "pipeline/cli.py" in files and "pipeline/ops/submit.py" in files
    assert all(f == "job.yaml" or f.startswith("pipeline/") for f in files), files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    staged = yaml.safe_load((tmp_path / "job.yaml").read_text())
    assert staged["train"]["steps"] == 7 and staged["data"]["root"] == tiny_root
    # the entrypoint runs the staged code on the staged job, named after the submission
    assert sub.entrypoint == "python -m pipeline train job.yaml --name qs-1"
    assert {".venv", ".git", "data", "mlflow.db", "ray_results"} <= set(sub.runtime_env["excludes"])


def test_only_named_non_secret_variables_travel(tiny_root, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-value")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    sub = ops.prepare(QUICKSTART, [f"data.root={tiny_root}"], submission_id="qs-2")
    env = dict(sub.runtime_env["env_vars"])
    assert len(env.pop("GANPIPE_GIT_COMMIT", "0" * 40)) == 40  # lineage, since .git does not travel
    assert env == {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000",
                   "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "GANPIPE_SUBMISSION_ID": "qs-2"}
    everything = repr(sub.runtime_env) + repr(sub.metadata) + sub.entrypoint
    assert "s3cr3t-value" not in everything and "pw-value" not in everything


def test_credentials_in_a_passed_url_are_refused(tiny_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:hunter2@mlflow.example:5000")
    with pytest.raises(ops.SubmitError) as e:
        ops.prepare(QUICKSTART, [f"data.root={tiny_root}"])
    assert "MLFLOW_TRACKING_URI" in str(e.value) and "hunter2" not in str(e.value)


def test_bad_submission_id_is_refused(tiny_root):
    with pytest.raises(ops.SubmitError, match="--name"):
        ops.prepare(QUICKSTART, [f"data.root={tiny_root}"], submission_id="no spaces please")


def test_address_from_flag_then_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert ops.resolve_address("http://other:8265") == "http://other:8265"
    assert ops.resolve_address(None) == "http://head:8265"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ops.resolve_address(None) == "http://127.0.0.1:8265"


def _search_file(tmp_path: Path, data_root: str, **changes) -> Path:
    search = {"name": "tiny-search", "job": str(QUICKSTART),
              "set": [f"data.root={data_root}", "train.steps=20", "train.eval_every=10", "scaling.num_workers=1"],
              "space": {"regularization.r1.gamma": {"loguniform": [0.01, 1.0]}}, "trials": 3, **changes}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def test_a_search_travels_as_a_self_contained_search_and_base_job(tiny_root, tmp_path):
    from pipeline.tune.spec import load_search

    path = _search_file(tmp_path, tiny_root)
    assert ops.is_search_file(path) and not ops.is_search_file(QUICKSTART)
    sub = ops.prepare_search(path, ["train.global_batch=16"], submission_id="tiny-1")
    assert sub.entrypoint == "python -m pipeline tune search.yaml --name tiny-1"
    assert sub.metadata["ganpipe_search"] == "tiny-search"
    staged = tmp_path / "staged"
    files = ops.stage(sub, staged)
    assert {"search.yaml", "job.yaml"} <= set(files) and all(f in ("search.yaml", "job.yaml") or f.startswith("pipeline/") for f in files)
    # On the cluster the staged search must resolve to the same trials, with --set applied to the base job.
    there = load_search(staged / "search.yaml")
    here = load_search(path, extra_set=["train.global_batch=16"])
    assert there.trials == here.trials and there.base_job() == here.base_job()
    assert there.base_job().train.global_batch == 16 and there.base_job().data.root == tiny_root


def test_a_search_that_can_produce_an_invalid_job_is_refused_before_the_cluster(tiny_root, tmp_path):
    path = _search_file(tmp_path, tiny_root, space={"regularization.l2.weight": {"uniform": [-1.0, 1.0]}})
    r = CliRunner().invoke(app, ["submit", str(path), "--address", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "weight" in r.output and "cannot reach" not in r.output
