"""Training checkpoints as everything outside the step loop meets them: where a job's checkpoints live
(a local folder or s3://bucket/prefix, through pyarrow as Ray Train writes them), how a person names
one, and the shippable generator inside one.

The driver (train/launch.py, train/runs.py), `ganpipe register` (tracking/recover.py) and a search's
winner (tune/) read checkpoints through this module, so they agree on where a run's folder is and
which weights ship; none of them imports another's code for it. The checkpoint's schema stays in
train/state.py (the one place it is written and read) and G is built by train/build.py, the builder
training itself uses, so a registered G has exactly the trained architecture: both are imported inside
`generator_from_checkpoint` only, and both are the no-Ray half of train/ (torch and gan/, no driver,
no MLflow, nothing that imports tracking/).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pipeline.spec import JobSpec, absolute_path


def storage(path: str, endpoint_url: str | None = None) -> tuple[str, object | None]:
    """(storage_path, pyarrow filesystem or None) as Ray Train's RunConfig and Checkpoint take them: a
    local path made absolute (workers do not run in this folder); an s3:// path with a filesystem
    for a custom endpoint (`endpoint_url`, else $AWS_ENDPOINT_URL_S3, as data/s3.py reads it), or
    as it is for AWS itself."""
    if not path.startswith("s3://"):
        return absolute_path(path), None
    import pyarrow.fs

    from pipeline.data.s3 import resolve_endpoint

    endpoint = resolve_endpoint(endpoint_url)
    if endpoint is None:
        return path, None
    # pyarrow needs host:port plus the scheme separately; plain-http endpoints (MinIO, moto) need "http".
    parts = urlsplit(endpoint)
    fs = pyarrow.fs.S3FileSystem(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
    return path.removeprefix("s3://"), fs


def storage_root(path: str, endpoint_url: str | None = None) -> tuple[str, object]:
    """Like `storage`, the filesystem always concrete (a local one too), for reading runs' folders."""
    import pyarrow.fs

    path, fs = storage(path, endpoint_url)
    if fs is None:
        fs, path = pyarrow.fs.FileSystem.from_uri(path if "://" in path else f"file://{path}")
    return path.rstrip("/"), fs


def location(path: str, filesystem) -> str:
    """A checkpoint's path as people type it: Ray keeps S3 paths without their scheme."""
    import pyarrow.fs

    if isinstance(filesystem, pyarrow.fs.S3FileSystem):
        return "s3://" + path.lstrip("/")
    return path


def open_checkpoint(url: str, endpoint_url: str | None = None):
    """The Ray Train Checkpoint at a folder or s3:// URL (on the job's endpoint, as training wrote it)."""
    from ray.train import Checkpoint

    path, fs = storage(url, endpoint_url)
    return Checkpoint(path, filesystem=fs)


def generator_from_checkpoint(directory: str | Path, spec: JobSpec):
    """(G, meta) out of a checkpoint directory: the EMA weights when the job keeps an EMA, in eval mode."""
    from pipeline.train.build import build_networks
    from pipeline.train.regularization import Regularization
    from pipeline.train.state import TrainState, load_meta

    state = TrainState.load(directory)
    G, _ = build_networks(spec.model, resolution=spec.data.resolution, regs=Regularization.from_specs(spec.regularization))
    G.load_state_dict(state.ema if state.ema is not None else state.G)  # EMA.state_dict() is the averaged module's
    return G.eval(), load_meta(directory)
