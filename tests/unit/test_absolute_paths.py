"""One rule makes a job's local paths absolute, for `ganpipe train`, `submit` and `tune` alike."""
from pathlib import Path

from pipeline.spec import load_job, with_absolute_paths

REPO = Path(__file__).resolve().parents[2]


def _job(*sets: str):
    return load_job(REPO / "jobs/quickstart.yaml", list(sets))


def test_local_paths_become_absolute_against_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = with_absolute_paths(_job("data.root=data/digits", "checkpoint.storage_path=./runs", "eval.cache_dir=cache"))
    assert spec.data.root == str(tmp_path.resolve() / "data/digits")
    assert spec.checkpoint.storage_path == str(tmp_path.resolve() / "runs")
    assert spec.eval.cache_dir == str(tmp_path.resolve() / "cache")


def test_urls_and_a_home_cache_are_left_as_they_are():
    spec = with_absolute_paths(_job("data.root=s3://bucket/digits", "checkpoint.storage_path=s3://bucket/runs",
                                    "eval.cache_dir=~/.cache/ganpipe"))
    assert (spec.data.root, spec.checkpoint.storage_path) == ("s3://bucket/digits", "s3://bucket/runs")
    assert spec.eval.cache_dir == "~/.cache/ganpipe"  # each machine's own home: a cache is per machine


def test_a_resume_compares_the_same_spec(tmp_path, monkeypatch):
    # The run's tag is the hash after this step; a resume takes the same step before comparing, so
    # the same job from the same folder matches and a relative path from another folder does not.
    monkeypatch.chdir(tmp_path)
    original = with_absolute_paths(_job("data.root=data"))
    assert with_absolute_paths(original) == original  # idempotent: a submitted job's file is final
    assert with_absolute_paths(_job("data.root=data")).sha256() == original.sha256()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert with_absolute_paths(_job("data.root=data")).sha256() != original.sha256()
