"""`ganpipe data ...`: pack, index, ls, verify, preview. Mounted by the root CLI as `app.add_typer(data_app, name="data")`.

Exit codes: 0 success; 1 verify found differences; 2 the command could not run (bad source,
missing manifest, unreachable store).
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.cli_common import fail
from pipeline.data.errors import DataError

data_app = typer.Typer(
    help="Pack images into WebDataset shards, index shards you already have, list, verify and preview them.", no_args_is_help=True
)
console = Console(soft_wrap=True)  # long URLs and hashes stay on one line for scripts
err = Console(stderr=True, soft_wrap=True)

EndpointOption = typer.Option(
    None, "--endpoint-url", help="S3-compatible endpoint (MinIO, moto); default: AWS_ENDPOINT_URL_S3 or AWS itself."
)



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
        fail(str(exc))
    sent = f", {uploaded} shard(s) uploaded" if out.startswith("s3://") else ""
    console.print(
        f"packed {manifest['num_samples']} samples into {len(manifest['shards'])} shard(s) at {out}{sent}\n"
        f"snapshot {snapshot}",
        highlight=False,
    )


@data_app.command()
def index(
    shards: str = typer.Argument(
        ..., help="Brace pattern (s3://bucket/laion/{00000..00999}.tar), s3:// prefix or local folder (every .tar under it)."
    ),
    out: Optional[str] = typer.Option(None, "--out", help="Where manifest.json goes (folder or s3://); default: next to the shards."),
    image_key: str = typer.Option("auto", "--image-key", help="Member holding the image; auto: the first of jpg, jpeg, png, webp."),
    label_key: str = typer.Option("auto", "--label-key", help="cls, json.<field> (e.g. json.label) or none; auto: cls when present."),
    parallel: int = typer.Option(8, "--parallel", min=1, help="Shards read at once."),
    # Hidden and ignored: the resume state now lives beside the output (<out>/.index-state/), so any
    # machine can continue an interrupted index; accepted so that existing scripts keep working.
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", hidden=True),
    endpoint_url: Optional[str] = EndpointOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Index shards you already have (img2dataset, webdataset's ShardWriter, ...) for training.

    Reads every shard once, streaming and in parallel, and writes manifest.json: per shard its samples, bytes, sha256, image and label members, image sizes.
    A rerun after an interruption, here or on another machine, does not read the shards already indexed (their state is kept in <out>/.index-state/ until the manifest is written).
    Exit 2 naming every missing or unreadable shard.
    """
    from pipeline.data.index import index as run_index

    progress = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=quiet, console=err)
    with progress:
        task = progress.add_task("shards", total=None)
        try:
            report = run_index(
                shards, out=out, endpoint_url=endpoint_url, image_key=image_key, label_key=label_key, parallel=parallel,
                on_listed=lambda n: progress.update(task, total=n),
                on_shard=lambda _name, _reused: progress.advance(task),
            )
        except (DataError, OSError) as exc:
            fail(str(exc))
    m = report.manifest
    low, high = m["image_sizes"]["shorter_side"]
    sides = f"shorter side {low}-{high} px" if low is not None else "no readable image"
    reused = f" ({report.reused} from an earlier run)" if report.reused else ""
    console.print(
        f"ok: {len(m['shards'])} shard(s), {m['num_samples']:,} samples indexed{reused}; image {m['image_key']}, "
        f"label {m['label_key'] or 'none'}, {sides}\nmanifest {store_join(report.out)} snapshot {report.snapshot}",
        highlight=False,
    )
    if m["unreadable_images"]:
        err.print(
            f"[yellow]warning:[/yellow] {m['unreadable_images']} sample(s) without a readable image; "
            "`ganpipe data verify` names them", highlight=False,
        )


def store_join(root: str) -> str:
    from pipeline.data import store
    from pipeline.data.manifest import MANIFEST_NAME

    return store.join(root, MANIFEST_NAME)


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
        fail(str(exc))
    summary = Table(show_header=False, box=None)
    rows = [
        ("root", url),
        ("snapshot", snapshot),
        ("kind", manifest.get("kind", "packed")),
        ("source", manifest.get("source")),
        ("created", manifest.get("created")),
        ("image size", _image_size(manifest)),
        ("samples", f"{manifest['num_samples']:,}"),
        ("shards", str(len(manifest["shards"]))),
        ("bytes", f"{manifest['total_bytes']:,}"),
        ("classes", ", ".join(manifest["classes"]) if manifest.get("classes") else "-"),
    ]
    if manifest.get("kind") == "indexed":
        rows += [("image key", manifest["image_key"]), ("label key", manifest["label_key"] or "-"),
                 ("members", ", ".join(f"{k} {v:,}" for k, v in manifest["members"].items()))]
        if manifest.get("shards_root"):
            rows.append(("shards at", manifest["shards_root"]))
    for key, value in rows:
        summary.add_row(key, str(value))
    console.print(summary)
    if shards:
        table = Table("name", "samples", "bytes", "sha256")
        for s in manifest["shards"]:
            table.add_row(s["name"], str(s["samples"]), f"{s['bytes']:,}", s["sha256"][:16])
        console.print(table)


def _image_size(manifest: dict) -> str:
    size = manifest["image_size"]
    if size is None:
        sizes = manifest.get("image_sizes", {})
        (w0, w1), (h0, h1) = sizes.get("width", [None, None]), sizes.get("height", [None, None])
        return f"any (width {w0}-{w1}, height {h0}-{h1})"
    return "x".join(str(v) for v in size) if isinstance(size, list) else str(size)


@data_app.command()
def verify(
    url: str = typer.Argument(..., help="Local folder or s3://bucket/prefix holding manifest.json."),
    endpoint_url: Optional[str] = EndpointOption,
    on_corrupt: str = typer.Option("fail", "--on-corrupt", help="fail: every corrupt sample is a difference; skip: count them."),
    max_corrupt_fraction: float = typer.Option(
        0.0, "--max-corrupt-fraction", min=0.0, max=1.0, help="With --on-corrupt skip: the share of samples allowed to be corrupt."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Check every shard against the manifest: counts, bytes, sha256, every sample decoded.

    Streams the shards through the same reader and decoder training uses, packed or indexed, with
    training's corrupt-sample policy. Exit 0 when all match, 1 with a list of the differences,
    2 when the manifest cannot be read.
    """
    if on_corrupt not in ("fail", "skip"):
        fail(f"--on-corrupt must be fail or skip, got {on_corrupt!r}")
    if on_corrupt == "skip" and max_corrupt_fraction <= 0:
        fail("--on-corrupt skip needs --max-corrupt-fraction > 0 (the share of samples allowed to be corrupt)")
    from pipeline.data.manifest import load_manifest
    from pipeline.data.verify import verify as run_verify

    try:
        manifest, _ = load_manifest(url, endpoint_url=endpoint_url)
    except (DataError, OSError) as exc:
        fail(str(exc))
    progress = Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=quiet, console=err)
    with progress:
        task = progress.add_task("shards", total=len(manifest["shards"]))
        try:
            report = run_verify(
                url, endpoint_url=endpoint_url, on_shard=lambda _: progress.advance(task),
                on_corrupt=on_corrupt, max_corrupt_fraction=max_corrupt_fraction,
            )
        except (DataError, OSError) as exc:
            fail(str(exc))
    skipped = report.skipped
    if report.ok:
        note = f", {len(skipped)} corrupt sample(s) skipped" if skipped else ""
        console.print(f"ok: {len(report.shards)} shard(s), {report.samples:,} samples match snapshot {report.snapshot}{note}", highlight=False)
        for item in skipped:
            console.print(f"  skipped: {item}", highlight=False, markup=False)
        return
    console.print(f"[red]{len(report.problems)} difference(s)[/red] under {url}:", highlight=False)
    for problem in report.problems:
        console.print(f"  - {problem}", highlight=False, markup=False)
    raise typer.Exit(1)


@data_app.command()
def preview(
    root: str = typer.Argument(..., help="Local folder or s3://bucket/prefix holding manifest.json."),
    n: int = typer.Option(64, "-n", min=1, help="Samples in the grid."),
    out: str = typer.Option("preview.png", "--out", "-o", help="PNG file to write."),
    shuffle: bool = typer.Option(False, "--shuffle", help="A random draw over all shards instead of the first n in shard order."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --shuffle draw (same seed, same grid)."),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", help="Tile side in pixels; default: the manifest's image size (packed) or 64 (indexed)."
    ),
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Write a grid of samples decoded exactly as the loader does for evaluation (centre crop, no flip).

    Row-major, the label under each tile (the class name when the manifest lists classes). Look at it before training on shards someone else wrote: sideways photos, washed-out or black images and wrong labels show at a glance.
    Corrupt samples are left out and named.
    """
    from pipeline.data.preview import preview as run_preview

    try:
        result = run_preview(root, n=n, shuffle=shuffle, seed=seed, resolution=resolution, endpoint_url=endpoint_url)
        result.image.save(out, format="PNG")
    except (DataError, OSError, ValueError) as exc:  # ValueError: a --resolution the data spec refuses
        fail(str(exc))
    order = f"a shuffled draw (seed {seed})" if shuffle else "shard order"
    console.print(f"wrote {out}: {len(result.keys)} sample(s) in {order}, {result.resolution} px", highlight=False)
    for item in result.skipped:
        err.print(f"[yellow]skipped:[/yellow] {item}", highlight=False)
