"""A credential typed into a URL is refused at the edge and never repeated: on the command line
(any verb, any option, a --set value), in the URL variables, in a job file's data.root or
checkpoint.storage_path, and by the s3:// URL parser (issue 16 §4)."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli_common import credentials_given
from pipeline.data import s3
from pipeline.data.errors import DataError
from pipeline.spec import SpecError, load_job

SECRET = "s3cr3t%2Fpart"
QUICKSTART = str(Path(__file__).resolve().parents[2] / "jobs/quickstart.yaml")


@pytest.mark.parametrize("args, where", [
    (["train", "j.yaml", "--set", f"data.root=s3://KEY:{SECRET}@bucket/x"], "--set data.root"),
    (["sample", "m", "--tracking-uri", f"http://admin:{SECRET}@host"], "--tracking-uri"),
    (["promote", "m", f"--tracking-uri=http://admin:{SECRET}@host"], "--tracking-uri"),
    (["register", f"s3://KEY:{SECRET}@bucket/ckpt", "--run", "r"], "an argument"),
    (["submit", "j.yaml", "--address", f"https://{SECRET}@head:8265"], "--address"),  # a token as the user
])
def test_where_a_credential_was_typed_is_named_never_the_value(args, where):
    assert credentials_given(args, {}) == where


def test_urls_without_credentials_and_at_signs_in_paths_pass():
    args = ["train", "j.yaml", "--set", "data.root=s3://bucket/photos@2x", "--tracking-uri", "http://mlflow:5000",
            "models:/gan@champion", "--address", "http://head:8265"]
    assert credentials_given(args, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) is None


@pytest.mark.parametrize("argv, env", [
    (["sample", "models:/m@champion", "--tracking-uri", f"http://admin:{SECRET}@127.0.0.1:9"], {}),
    (["data", "ls", f"s3://KEY:{SECRET}@bucket/x"], {}),
    (["models"], {"MLFLOW_TRACKING_URI": f"http://admin:{SECRET}@127.0.0.1:9"}),
    (["train", QUICKSTART, "--dry-run", "--set", f"data.root=s3://KEY:{SECRET}@bucket/x"], {}),  # --dry-run would print it
])
def test_every_verb_refuses_before_it_starts(argv, env):
    r = CliRunner().invoke(app, argv, env=env)
    assert r.exit_code == 2 and "credentials" in r.output and "s3cr3t" not in r.output, r.output


def test_help_answers_where_a_url_variable_holds_credentials():
    env = {"MLFLOW_TRACKING_URI": f"http://admin:{SECRET}@127.0.0.1:9"}
    for argv in (["--help"], ["train", "--help"]):
        r = CliRunner().invoke(app, argv, env=env)
        assert r.exit_code == 0 and "Usage" in r.output and "s3cr3t" not in r.output, r.output


@pytest.mark.parametrize("field, value", [("data.root", f"s3://KEY:{SECRET}@bucket/x"),
                                          ("checkpoint.storage_path", f"s3://KEY:{SECRET}@bucket/runs")])
def test_job_files_refuse_storage_urls_with_credentials(field, value):
    with pytest.raises(SpecError) as e:
        load_job(QUICKSTART, [f"{field}={value}"])
    assert field in str(e.value) and "credentials" in str(e.value) and "s3cr3t" not in str(e.value)


def test_the_s3_parser_refuses_credentials_without_echoing_them():
    with pytest.raises(DataError) as e:
        s3.parse(f"s3://KEY:{SECRET}@bucket/x")
    assert "credentials" in str(e.value) and "s3cr3t" not in str(e.value)
    with pytest.raises(ValueError) as e:
        s3.parse(f"http://KEY:{SECRET}@host/x")
    assert "s3cr3t" not in str(e.value)
