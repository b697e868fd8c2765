"""`ganpipe data ...`: pack, ls, verify. Mounted by the root CLI as `app.add_typer(data_app, name="data")`.

Exit codes: 0 success; 1 verify found differences; 2 the command could not run (bad source,
missing manifest, unreachable store).
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.data.errors import DataError

data_app = typer.Typer(help="Pack images into WebDataset shards, list them, verify them.", no_args_is_help=True)
console = Console(soft_wrap=True)  # long URLs and hashes stay on one line for scripts
err = Console(stderr=True, soft_wrap=True)

EndpointOption = typer.Option(
    None, "--endpoint-url", help="S3-compatible endpoint (MinIO, moto); default: AWS_ENDPOINT_URL_S3 or AWS itself."
)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@data_app.command()
def pack(
    source: str = typer.Argument(..., help="'digits' (bundled), a folder of png/jpg (sub-folder = class), or an .npz with images[, labels]."),
    out: str = typer.Option(..., "--out", help="Local folder or s3://bucket/prefix to write shards and manifest.json to."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Samples per shard."),
    resolution: int = typer.Option(32, "--resolution", help="Image side in pixels (power of two >= 8)."),
    endpoint_url: Optional[str] = EndpointOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Pack SOURCE into shard-000000.tar ... plus manifest.json under --out.

    Re-packing the same source sends nothing new and keeps the snapshot id (the manifest's sha256).
    """
    from pipeline.data.manifest import load_manifest
    from pipeline.data.pack import pack_with_report

    try:
        manifest, uploaded = pack_with_report(
            source, out, shard_size=shard_size, resolution=resolution, endpoint_url=endpoint_url, progress=not quiet
        )
        _, snapshot = load_manifest(out, endpoint_url=endpoint_url)
    except (DataError, OSError) as exc:
        _fail(str(exc))
    sent = f", {uploaded} shard(s) uploaded" if out.startswith("s3://") else ""
    console.print(
        f"packed {manifest['num_samples']} samples into {len(manifest['shards'])} shard(s) at {out}{sent}\n"
        f"snapshot {snapshot}",
        highlight=False,
    )


@data_app.command("ls")
def ls(
    url: str = typer.Argument(..., help="Local folder or s3://bucket/prefix holding manifest.json."),
    endpoint_url: Optional[str] = EndpointOption,
    shards: bool = typer.Option(False, "--shards", help="Also list every shard."),
) -> None:
    """Print the manifest summary: snapshot id, source, image size, samples, shards, bytes."""
    from pipeline.data.manifest import load_manifest

    try:
        manifest, snapshot = load_manifest(url, endpoint_url=endpoint_url)
    except (DataError, OSError) as exc:
        _fail(str(exc))
    summary = Table(show_header=False, box=None)
    for key, value in (
        ("root", url),
        ("snapshot", snapshot),
        ("source", manifest.get("source")),
        ("created", manifest.get("created")),
        ("image size", "x".join(str(v) for v in manifest["image_size"]) if isinstance(manifest["image_size"], list) else manifest["image_size"]),
        ("samples", f"{manifest['num_samples']:,}"),
        ("shards", str(len(manifest["shards"]))),
        ("bytes", f"{manifest['total_bytes']:,}"),
        ("classes", ", ".join(manifest["classes"]) if manifest.get("classes") else "-"),
    ):
        summary.add_row(key, str(value))
    console.print(summary)
    if shards:
        table = Table("name", "samples", "bytes", "sha256")
        for s in manifest["shards"]:
            table.add_row(s["name"], str(s["samples"]), f"{s['bytes']:,}", s["sha256"][:16])
        console.print(table)


@data_app.command()
def verify(
    url: str = typer.Argument(..., help="Local folder or s3://bucket/prefix holding manifest.json."),
    endpoint_url: Optional[str] = EndpointOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Check every shard against the manifest: counts, bytes, sha256, every sample decoded.

    Streams the shards through the same reader training uses. Exit 0 when all match, 1 with a
    list of the differences, 2 when the manifest cannot be read.
    """
    from pipeline.data.manifest import load_manifest
    from pipeline.data.verify import verify as run_verify

    try:
        manifest, _ = load_manifest(url, endpoint_url=endpoint_url)
    except (DataError, OSError) as exc:
        _fail(str(exc))
    progress = Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=quiet, console=err)
    with progress:
        task = progress.add_task("shards", total=len(manifest["shards"]))
        try:
            report = run_verify(url, endpoint_url=endpoint_url, on_shard=lambda _: progress.advance(task))
        except (DataError, OSError) as exc:
            _fail(str(exc))
    if report.ok:
        console.print(f"ok: {len(report.shards)} shard(s), {report.samples:,} samples match snapshot {report.snapshot}", highlight=False)
        return
    console.print(f"[red]{len(report.problems)} difference(s)[/red] under {url}:", highlight=False)
    for problem in report.problems:
        console.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(1)
