"""What start-up imports, checked in fresh interpreters (issue 17 §2): `ganpipe --help` imports none
of the heavy libraries, the workers' training module imports only what a step needs, and rank 0's
MLflow logger leaves importing mlflow to its sender thread."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "mlflow", "pandas", "pyarrow")


def _loaded(code: str, names) -> list[str]:
    """Which of `names` are in sys.modules after running `code` in a new interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(n for n in {list(names)!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_cli_imports_nothing_heavy_before_a_verb_runs():
    # `ganpipe --help` is 0.2 s because of this; torch alone is seconds.
    assert _loaded("import pipeline.cli", HEAVY) == []


def test_the_workers_training_module_imports_no_mlflow_nor_the_cli():
    # MLflow is rank 0's, and only its sender thread's (run_logger); the CLI's libraries are the driver's.
    assert _loaded("import pipeline.train.worker", ("mlflow", "typer", "rich", "pipeline.cli", "pipeline.train.launch")) == []


def test_rank0s_logger_leaves_mlflow_to_its_sender(tmp_path):
    # Before, `import mlflow` (seconds) ran on rank 0 before its first step, and the other ranks
    # waited for it at the first collective. Nothing is logged here, so the sender has no reason
    # to import it yet; tests/unit/test_run_logger.py shows the points still arrive.
    code = ("from pipeline.tracking.run_logger import RunLogger\n"
            f"RunLogger('sqlite:///{tmp_path}/m.db', '0' * 32, patience_s=1)")
    assert _loaded(code, ("mlflow",)) == []


def test_the_spec_and_the_drivers_checks_import_nothing_heavy():
    # `ganpipe train` validates the spec and checks the shards before Ray starts; torch, mlflow and Ray
    # Train are imported after that, in the thread that runs while Ray starts (train/launch.py).
    # What cli.train imports before it calls launch.train, and what that imports before Ray starts:
    code = ("import pipeline.spec, pipeline.train.launch, pipeline.data.manifest, pipeline.train.runs, "
            "pipeline.tracking.publish, pipeline.tracking.run, pipeline.data.errors, pipeline.train.startup")
    assert _loaded(code, HEAVY) == []
