"""`ganpipe promote | rollback | models | register`: the model registry as people use it.

Mounted at the top level of `ganpipe` (pipeline/cli.py). Exit codes are part of the interface:
scripts and CI branch on them (see promote's --help).
"""
from __future__ import annotations

import logging
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli_common import fail

registry_app = typer.Typer(add_completion=False)
console = Console(soft_wrap=True)

TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db)."


class Metric(str, Enum):
    fd = "fd"
    kid = "kid"



def _quiet_mlflow() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)


@registry_app.command()
def promote(
    model: str = typer.Argument(..., help="Registered model name, e.g. gan-digits."),
    candidate: str = typer.Option(..., "--candidate", help="VERSION (e.g. 7) or @ALIAS (e.g. @challenger)."),
    metric: Metric = typer.Option(Metric.fd, help="Score to compare on; lower is better for both."),
    min_improvement: float = typer.Option(0.05, help="Relative margin the candidate must win by (0.05 = 5 % lower)."),
    max_memorization: Optional[float] = typer.Option(None, help="Refuse a candidate whose memorization share is above this (0..1)."),
    data: Optional[str] = typer.Option(None, help="Reference data (folder or s3://) instead of the candidate's own data snapshot."),
    num_samples: Optional[int] = typer.Option(None, min=2, help="Generated samples per score (default: the candidate job's eval.num_samples)."),
    seed: int = typer.Option(0, help="Seed of the latent vectors (the same for both versions)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Score and decide, but move no alias and record nothing."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Make a version `champion` if it beats the current champion by the margin.

    Both are scored by one evaluator (extractor and weights, data snapshot, sample count, seed); a score recorded under it is reused.

    The decision is recorded on both versions; the replaced champion keeps the alias `previous-champion`.

    Exit codes: 0 promoted (or first champion) | 3 kept the champion | 2 could not decide (no such version or alias, contract mismatch, missing data, tracking server unreachable).
    """
    from pipeline.tracking.gate import GateError
    from pipeline.tracking.gate import promote as run_gate

    _quiet_mlflow()
    try:
        with console.status(f"scoring {model} {candidate} against the champion"):
            d = run_gate(model, candidate, metric=metric.value, min_improvement=min_improvement,
                         max_memorization=max_memorization, data=data, num_samples=num_samples, seed=seed,
                         tracking_uri=tracking_uri, dry_run=dry_run)
    except GateError as e:
        fail(str(e))
    _print_table(decision_table(d))
    console.print(f"{d.outcome}{' (dry run: nothing moved)' if d.dry_run else ''}: {d.reason}", highlight=False)
    if d.evaluator_key:
        e = d.evaluator
        console.print(f"evaluator {d.evaluator_key}: {e.get('extractor')} features, {e.get('num_samples')} samples, "
                      f"seed {e.get('seed')}, data {str(e.get('data_sha256'))[:12]}", highlight=False)
    raise typer.Exit(d.exit_code)


def decision_table(d) -> Table:
    table = Table("version", "role", d.metric, "decision")
    extra = "memorization" if d.max_memorization is not None else None
    if extra:
        table.add_column(extra)
    rows = [(d.candidate, "candidate", d.outcome)]
    if d.champion is not None and d.champion != d.candidate:
        rows.append((d.champion, "champion", "replaced" if d.outcome == "promoted" and not d.dry_run else "kept"))
    for version, role, verdict in rows:
        scores = d.scores.get(version, {})
        cells = [version, role + (" (recorded)" if d.reused.get(version) else ""), _fmt(scores.get(d.metric)), verdict]
        if extra:
            cells.append(_fmt(scores.get(extra)))
        table.add_row(*cells)
    return table


def _print_table(table: Table) -> None:
    # Piped or captured output has no width to respect: print the table whole (an 80-column
    # default would truncate run ids and aliases that scripts and people copy).
    (console if console.is_terminal else Console(soft_wrap=True, width=250)).print(table)


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4g}"


@registry_app.command()
def rollback(
    model: str = typer.Argument(..., help="Registered model name."),
    reason: str = typer.Option("rolled back by hand", help="Why (recorded on both versions)."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Make `previous-champion` the champion again, recording why. Exit 2 when there is nothing to roll back to."""
    from pipeline.tracking.gate import GateError
    from pipeline.tracking.gate import rollback as run_rollback

    _quiet_mlflow()
    try:
        r = run_rollback(model, reason=reason, tracking_uri=tracking_uri)
    except GateError as e:
        fail(str(e))
    console.print(f"{model}: version {r.champion} is champion again (replacing {r.replaced or 'none'}): {r.reason}", highlight=False)


@registry_app.command()
def models(
    model: Optional[str] = typer.Argument(None, help="A registered model: list its versions. Without it: list the models."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """List registered models, or one model's versions (aliases, steps, job, data snapshot, fd/kid, sample accuracy, classes, run)."""
    from pipeline.tracking.gate import GateError
    from pipeline.tracking.listing import models as list_models

    _quiet_mlflow()
    try:
        rows = list_models(model, tracking_uri=tracking_uri)
    except GateError as e:
        fail(str(e))
    columns = (["version", "aliases", "steps", "job", "data", "fd", "kid", "accuracy", "classes", "run_id", "created"] if model
               else ["name", "versions", "champion", "previous_champion", "latest", "updated"])
    table = Table(*[c.replace("_", " ") for c in columns])
    for row in rows:
        table.add_row(*[_short(row[c]) for c in columns])
    _print_table(table)


def _short(value) -> str:
    value = str(value)
    try:
        return f"{float(value):.4g}" if "." in value else value
    except ValueError:
        return value


@registry_app.command()
def register(
    checkpoint: str = typer.Argument(..., help="Checkpoint folder (or s3:// URI) the training run printed."),
    run: str = typer.Option(..., "--run", help="MLflow run id of the training run."),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Complete a registration that a tracking-server outage stopped at the end of training (exactly once)."""
    from pipeline.tracking.gate import GateError
    from pipeline.tracking.publish import RegistrationPending
    from pipeline.tracking.recover import RegisterError, register_checkpoint

    _quiet_mlflow()
    try:
        out = register_checkpoint(checkpoint, run_id=run, tracking_uri=tracking_uri)
    except (GateError, RegisterError, RegistrationPending) as e:
        fail(str(e))
    champion = " (alias champion)" if out.became_champion else ""
    verb = "registered" if out.new else "already registered:"
    console.print(f"{verb} models:/{out.name}/{out.version}{champion} from run {run}", highlight=False)
