"""`ganpipe`: one verb per user task. Every verb has --help; errors are one clear message, exit 2."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from pipeline.cli_common import RefusesCredentials, fail

# MLflow's INFO lines (store migrations, artifact uploads) would drown the progress bar.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

# RefusesCredentials: a URL with user:password@ anywhere on the command line or in $MLFLOW_TRACKING_URI
# and friends ends every verb before it starts (cli_common.py).
app = typer.Typer(help="Distributed GAN training on Ray, from WebDataset shards to an MLflow-registered generator.", no_args_is_help=True,
                  add_completion=False, cls=RefusesCredentials)
console = Console(soft_wrap=True)  # paths and URIs stay on one line, copy-pastable
err = Console(stderr=True)


from pipeline.data.cli import data_app  # noqa: E402  (after the MLflow log level is set)

app.add_typer(data_app, name="data", help="Pack, index, list and verify WebDataset shards (local folder or s3://).")

from pipeline.tracking.cli import registry_app  # noqa: E402

app.add_typer(registry_app)  # no name: promote, rollback, models, register are top-level verbs


@app.command()
def train(
    job: Path = typer.Argument(..., help="Job spec YAML (see jobs/)."),
    set_: List[str] = typer.Option([], "--set", help="Override a field: --set train.steps=50, a regularizer by kind: --set regularization.r1.gamma=0.1 (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved spec and exit; starts nothing."),
    name: Optional[str] = typer.Option(None, help="Name of the new run (default: job name, time and a random suffix); an existing one is refused."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN", help="Continue this unfinished run (see `ganpipe runs`): same MLflow run and checkpoints."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: spec, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a GAN job on Ray (local instance, or the cluster at $RAY_ADDRESS) and register its generator.
    Ctrl-C stops it, marks the MLflow run KILLED and prints the command that resumes it."""
    from pipeline.data.errors import DataError
    from pipeline.spec import SpecError, load_job

    try:
        spec = load_job(job, set_)
    except SpecError as e:
        fail(str(e))
    if dry_run:
        import yaml

        console.print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="", highlight=False, markup=False)
        return
    from pipeline.tracking.publish import RegistrationPending
    from pipeline.tracking.run import TrackingUnreachable
    from pipeline.train.launch import SchedulingError, TrainingInterrupted
    from pipeline.train.launch import train as run_training
    from pipeline.train.runs import ResumeError

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # the progress bar and summary say it all

    try:
        out = run_training(spec, run_name=name, resume=resume, tracking_uri=tracking_uri, show_progress=progress)
    except (DataError, SchedulingError, RegistrationPending, ResumeError, TrackingUnreachable) as e:
        fail(str(e))
    except TrainingInterrupted as e:
        _interrupted(e, _resume_command(job, set_, tracking_uri, e.run_name))
    except Exception as e:
        # Ray Train is imported here, not above: the driver imports it while Ray starts (train/launch.py).
        from ray.train import TrainingFailedError

        if isinstance(e, TrainingFailedError):  # the workers' own traceback is in the message; ours adds nothing
            fail(f"training failed: {e}")
        raise
    champion = " (alias champion)" if out.became_champion else ""
    console.print(f"[green]done[/] run {out.run_name}")
    console.print(f"  MLflow run      {out.run_id}  at {out.tracking_uri}")
    console.print(f"  checkpoint      {out.checkpoint_path}")
    console.print(f"  registered      models:/{spec.tracking.registered_model}/{out.model_version}{champion}")


def _resume_command(job: Path, sets: List[str], tracking_uri: Optional[str], run_name: str) -> str:
    """The exact command line that continues `run_name` (same job file, overrides and store)."""
    import shlex
    import sys

    prog = ["ganpipe"] if Path(sys.argv[0]).name == "ganpipe" else [sys.executable, "-m", "pipeline"]
    args = [*prog, "train", str(job), *[a for s in sets for a in ("--set", s)]]
    args += ["--tracking-uri", tracking_uri] if tracking_uri else []
    return shlex.join([*args, "--resume", run_name])


def _interrupted(e, command: str) -> None:
    where = f"step {e.checkpoint_step} of {e.steps}" if e.checkpoint_step is not None else f"none yet (a resume starts at step 0 of {e.steps})"
    err.print(f"[bold yellow]interrupted:[/] workers stopped; MLflow run {e.run_id} marked KILLED", highlight=False)
    err.print(f"  last checkpoint  {where}", highlight=False)
    err.print(f"  resume with      {command}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(130)  # the shell's code for "ended by SIGINT"


@app.command()
def runs(
    job: Path = typer.Argument(..., help="Job spec YAML: its name, MLflow experiment and checkpoint storage say where to look."),
    set_: List[str] = typer.Option([], "--set", help="The same overrides as the runs were started with."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: spec, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)."),
    all_: bool = typer.Option(False, "--all", help="Also list finished runs."),
) -> None:
    """List the job's runs that can be resumed (not FINISHED), with their last checkpoint and the resume command."""
    from rich.table import Table

    from pipeline.spec import SpecError, load_job
    from pipeline.tracking.run import resolve_tracking_uri
    from pipeline.train.runs import list_runs

    try:
        spec = load_job(job, set_)
    except SpecError as e:
        fail(str(e))
    uri = resolve_tracking_uri(tracking_uri or spec.tracking.tracking_uri)
    records = list_runs(spec, uri, include_finished=all_)
    if not records:
        console.print(f"no {'' if all_ else 'resumable '}runs of job {spec.name!r} in experiment {spec.tracking.experiment!r} at {uri}")
        return
    table = Table("run", "MLflow status", "last checkpoint", "started", "MLflow run id", box=None)
    for r in records:
        step = "none" if r.checkpoint_step is None else f"step {r.checkpoint_step}" + (f" of {r.steps}" if r.steps else "")
        table.add_row(r.run_name, r.status, step, r.started, r.run_id)
    console.print(table)
    # RUNNING may also be a run whose driver is alive elsewhere: resume only one you know has stopped.
    console.print("RUNNING: the driver is alive or died without a word; resume only a run you know has stopped.")
    for r in records:
        if r.status != "FINISHED":
            console.print(_resume_command(job, set_, tracking_uri, r.run_name), markup=False, highlight=False)


@app.command()
def sample(
    model_uri: str = typer.Argument(..., help="MLflow model URI, e.g. models:/gan-digits@champion."),
    n: int = typer.Option(64, "-n", min=1, help="Number of samples (per class, for a conditional model without --class)."),
    output: Path = typer.Option(Path("samples.png"), "-o", "--output",
                                help="A PNG grid, or .npz for the raw images (uint8 N×H×W×3) and their class labels."),
    class_name: Optional[str] = typer.Option(None, "--class", help="A conditional model's class, by name or index (default: a row per class)."),
    seed: int = typer.Option(0, help="Seed of the latent vectors."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI."),
) -> None:
    """Draw samples from a registered generator into a PNG grid or an .npz file."""
    from pipeline.sampling import sample as draw_samples

    try:
        count = draw_samples(model_uri, n=n, output=output, seed=seed, class_name=class_name, tracking_uri=tracking_uri)
    except Exception as e:  # a wrong URI or class, an unreachable store: one line, not a traceback
        fail(f"cannot sample {model_uri}: {e}")
    console.print(f"wrote {output} ({count} samples from {model_uri})")


@app.command("eval")
def eval_(
    model_uri: str = typer.Argument(..., help="MLflow model URI of a generator, e.g. models:/gan-digits@champion."),
    data: str = typer.Option(..., "--data", help="Packed or indexed data set (folder or s3://bucket/prefix with manifest.json)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Side real images are fitted to; default: the packed size, or for indexed shards the generator's."),
    n: int = typer.Option(10_000, "-n", min=2, help="Generated samples to score."),
    extractor: str = typer.Option("classifier", help="Feature space: classifier (trained on the shards' labels, cached) or inception."),
    inception_path: Optional[str] = typer.Option(None, help="TorchScript Inception-v3 feature file (for --extractor inception)."),
    inception_sha256: Optional[str] = typer.Option(None, help="Its expected sha256."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint for an s3:// data URL."),
    seed: int = typer.Option(0, help="Seed of the latent vectors."),
    cache_dir: str = typer.Option("~/.cache/ganpipe", help="Where the trained extractor and reference statistics are cached."),
    classifier_steps: int = typer.Option(300, help="Training steps of the classifier extractor (part of its cache key)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI."),
) -> None:
    """FD, KID, precision/recall and memorization share of a generator's samples against real images."""
    from pydantic import ValidationError

    from pipeline.data.config import DataSpec
    from pipeline.data.errors import DataError
    from pipeline.data.manifest import load_manifest, manifest_resolution
    from pipeline.eval.config import EvalSpec
    from pipeline.eval.memorization import MEMORIZATION_QUANTILE
    from pipeline.eval.scorer import GeneratorScorer
    from pipeline.sampling import load_generator

    try:
        spec = EvalSpec(extractor=extractor, num_samples=n, inception_path=inception_path, inception_sha256=inception_sha256,
                        cache_dir=cache_dir, classifier_steps=classifier_steps)
        manifest, manifest_sha = load_manifest(data, endpoint_url)
        side = resolution or manifest_resolution(manifest)  # None: indexed shards, any size
        data_spec = DataSpec(root=data, resolution=side, endpoint_url=endpoint_url) if side else None
    except (ValidationError, DataError) as e:
        fail(str(e))
    try:
        generator, z_dim = load_generator(model_uri, tracking_uri)
    except Exception as e:
        fail(f"cannot load {model_uri}: {e}")
    if data_spec is None:  # real images at the generator's own output side
        import torch

        with torch.no_grad():
            side = int(generator(torch.zeros(1, z_dim), torch.zeros(1, dtype=torch.int64)).shape[-1])
        data_spec = DataSpec(root=data, resolution=side, endpoint_url=endpoint_url)
    with console.status(f"scoring {n} samples of {model_uri} ({extractor} features)"):
        result = GeneratorScorer(spec, data_spec, manifest_sha, class_names=generator.class_names)(generator, z_dim, seed=seed)
    q, mem = MEMORIZATION_QUANTILE, result["memorization"]
    memorization = (f"{mem:.4f}  (share of samples closer to a training image than {1 - q:.0%} of "
                    f"{result['num_heldout']} held-out real images are; about {q} for new images)"
                    if mem is not None else f"n/a  ({result['memorization_note']})")
    console.print(f"FD  {result['fd']:.4f}\nKID {result['kid']:.5f}\n"
                  f"precision {result['precision']:.4f}\nrecall {result['recall']:.4f}\nmemorization {memorization}\n"
                  f"({result['num_samples']} samples, {result['num_real']} real, {result['extractor']} features, key {result['key'][:12]})",
                  markup=False, highlight=False)
    if result.get("per_class"):
        _print_classwise(result)


def _print_classwise(result: dict) -> None:
    """Per-class FD and sample accuracy of a conditional generator (pipeline/eval/classwise.py)."""
    from rich.table import Table

    acc = result["accuracy"]
    table = Table(title="class by class" + (f"  (sample accuracy {acc:.3f})" if acc is not None else ""))
    for column in ("class", "samples", "FD", "accuracy"):
        table.add_column(column, justify="left" if column == "class" else "right")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for name, row in result["per_class"].items():
        table.add_row(name, str(row["samples"]), fmt(row["fd"], ".3f"), fmt(row["accuracy"], ".3f"))
    console.print(table)


from pipeline.ops.cli import register as _register_ops  # noqa: E402  submit/status/logs/stop/jobs, schedule

_register_ops(app)

from pipeline.tune.cli import register as _register_tune  # noqa: E402  tune (searches with Ray Tune)

_register_tune(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
