"""`ganpipe tune SEARCH.yaml`: the search verb, mounted on the main app by pipeline/cli.py."""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline.cli_common import fail

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)



def tune(
    search_file: Path = typer.Argument(..., metavar="SEARCH", help="Search file YAML (see jobs/searches/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate every trial's job and list the trials; starts nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished search of this file: finished trials are kept, unfinished ones continue from their checkpoints."),
    best_spec: Optional[Path] = typer.Option(None, "--best-spec", help="Where to write the best trial's job (default: <search id>-best.yaml here)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: base job, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)."),
    progress: bool = typer.Option(True, help="Show the trials table while the search runs."),
    name: Optional[str] = typer.Option(None, help="Search id: the MLflow parent run's name and the Tune experiment folder (default NAME-TIME-RANDOM; `ganpipe submit` passes its submission id)."),
) -> None:
    """Search job-spec fields (regularization strengths, losses, learning rates) with Ray Tune: each
    trial trains the base job with its values, reports FD/KID at every eval, and ASHA stops the
    hopeless ones early. Ends with the results table, the best trial's job file, and its generator
    registered (or sent through the promotion gate)."""
    from pipeline.tune.spec import SearchError, load_search

    try:
        search = load_search(search_file)
    except SearchError as e:
        fail(str(e))
    if dry_run:
        _print_plan(search)
        return
    if resume and name:
        fail("--resume continues the newest unfinished search of this file under its own id; drop --name")
    from ray.train import TrainingFailedError

    from pipeline.data.errors import DataError
    from pipeline.tracking.publish import RegistrationPending
    from pipeline.train.launch import SchedulingError
    from pipeline.tune.driver import ResumeError, SearchInterrupted, run_search

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        out = run_search(search, resume=resume, tracking_uri=tracking_uri, best_spec=best_spec, show_progress=progress,
                         search_id=name)
    except (DataError, ResumeError, RegistrationPending, SchedulingError) as e:
        fail(str(e))
    except SearchInterrupted as e:
        err.print(f"[bold yellow]interrupted:[/] search {e.search_id}; MLflow parent run {e.parent_run_id} marked KILLED", highlight=False)
        err.print(f"  resume with  {_resume_command(search_file, tracking_uri)}", highlight=False, markup=False)
        raise typer.Exit(130)
    except TrainingFailedError as e:
        fail(f"a trial failed: {e}")
    _print_results(search, out)


def _resume_command(search_file: Path, tracking_uri: Optional[str]) -> str:
    prog = ["ganpipe"] if Path(sys.argv[0]).name == "ganpipe" else [sys.executable, "-m", "pipeline"]
    args = [*prog, "tune", str(search_file), *(["--tracking-uri", tracking_uri] if tracking_uri else []), "--resume"]
    return shlex.join(args)


def _print_plan(search) -> None:
    from rich.table import Table

    s, base = search.spec, search.base_job()
    table = Table("#", *s.space, box=None, title=f"search {s.name}: {len(search.trials)} trials")
    for i, t in enumerate(search.trials):
        table.add_row(str(i), *[_fmt(t[p]) for p in s.space])
    console.print(table)
    stop = ("every trial runs to the end" if s.scheduler.kind == "none" else
            f"ASHA from eval {s.scheduler.grace_period} (step {s.scheduler.grace_period * base.train.eval_every}), "
            f"keeping the best 1/{s.scheduler.reduction_factor:g} at each rung")
    console.print(
        f"base job {base.name} ({s.job}): {base.train.steps} steps, {s.metric} every {base.train.eval_every} steps; "
        f"{base.scaling.num_workers} worker(s) per trial, {s.max_concurrent} trial(s) at once; {stop}; winner: {s.winner}",
        highlight=False,
    )
    console.print("every trial's job spec is valid", highlight=False)


def _print_results(search, out) -> None:
    from rich.table import Table

    s = search.spec
    table = Table("trial", *s.space, "state", "last step", s.metric, box=None, title=f"search {out.search_id}")
    for r in sorted(out.rows, key=lambda r: (r.metric is None, r.metric if r.metric is not None else 0)):
        mark = " *" if out.best is not None and r.trial_id == out.best.trial_id else ""
        table.add_row(r.trial_id + mark, *[_fmt(r.params.get(p)) for p in s.space], r.state,
                      "" if r.step is None else str(r.step), "" if r.metric is None else f"{r.metric:.4g}")
    console.print(table)
    console.print(f"[green]done[/] search {out.search_id} in {out.wall_s:.0f} s", highlight=False)
    console.print(f"  MLflow parent run  {out.parent_run_id}  at {out.tracking_uri}", highlight=False)
    if out.best is None:
        console.print("  no trial ran to the end: nothing to publish", highlight=False)
        return
    console.print(f"  best trial         {out.best.trial_id} ({s.metric} {out.best.metric:.4g}, MLflow run {out.best.run_id})", highlight=False)
    console.print(f"  best job           {out.best_spec_path}  (ganpipe train {out.best_spec_path})", highlight=False)
    console.print(f"  best job, tracked  runs:/{out.parent_run_id}/best_job.yaml  (mlflow artifacts download -u runs:/...)", highlight=False)
    if out.model_version is not None:
        base = search.base_job()
        gate = f", gate: {out.gate_outcome}" if out.gate_outcome else ""
        console.print(f"  registered         models:/{base.tracking.registered_model}/{out.model_version}{gate}", highlight=False)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    """Mount `tune` on the main `ganpipe` app."""
    app.command()(tune)
