"""The job spec: one YAML file, validated once at the boundary into a frozen JobSpec.

Each component owns its section's model (data/config.py, gan/config.py, eval/config.py); this file
composes them, adds the run-level sections and every cross-field rule, and turns pydantic's errors
into messages that name the field, the value and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline.data.config import DataSpec
from pipeline.eval.config import EvalSpec
from pipeline.gan.config import (
    Frozen,
    LossSpec,
    ModelSpec,
    OptimSpec,
    Regularizer,
    check_model,
    check_regularization,
)


class TrainSpec(Frozen):
    steps: int = Field(ge=1)
    # Global batch: kept fixed when the worker count changes (per-worker batch = global / workers).
    global_batch: int = Field(64, ge=1)
    seed: int = 0
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    eval_every: int = Field(0, ge=0, description="0 = only at the end (when `eval` is set)")


class ScalingSpec(Frozen):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    torch_threads: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    # Seconds to wait for the worker group; an impossible request fails instead of retrying forever.
    start_timeout_s: float = Field(120, gt=0)
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint")
    # Ray placement-group strategy of the worker group: pack (as few nodes as fit, Ray's default),
    # spread (across nodes where it can), strict_spread (one worker per node, or not at all).
    placement: Literal["pack", "spread", "strict_spread"] = "pack"


class CheckpointSpec(Frozen):
    storage_path: str = Field("./ray_results", description="local folder or s3://bucket/prefix")
    num_to_keep: int = Field(2, ge=1)
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint for an s3:// storage_path")


class PromoteSpec(Frozen):
    """The promotion gate at the end of training (pipeline/tracking/gate.py): the new version becomes
    champion only if it beats the current one by `min_improvement` (relative) on `metric`."""

    metric: Literal["fd", "kid"] = "fd"
    min_improvement: float = Field(0.05, ge=0, lt=1)
    max_memorization: float | None = Field(None, ge=0, le=1, description="refuse a generator that copies more of its training data")


class TrackingSpec(Frozen):
    experiment: str = "gan"
    registered_model: str = "gan"
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    grid_size: int = Field(64, ge=1)
    # Absent: the first version becomes champion, later ones are only registered (promote by hand).
    promote: PromoteSpec | None = None
    # How long the end of a run waits out a tracking-server outage (rank 0's buffered metrics, then
    # logging and registering the generator) before it gives up and prints `ganpipe register ...`.
    patience_s: float = Field(600, gt=0)


class JobSpec(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataSpec
    model: ModelSpec = ModelSpec()
    loss: LossSpec = LossSpec()
    regularization: tuple[Regularizer, ...] = ()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec
    scaling: ScalingSpec = ScalingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    tracking: TrackingSpec = TrackingSpec()
    eval: EvalSpec | None = None

    @model_validator(mode="after")
    def _no_credentials_in_urls(self) -> "JobSpec":
        # data.endpoint_url is checked by DataSpec. Credentials come from the AWS chain and
        # MLFLOW_TRACKING_USERNAME/PASSWORD; a URL with user:password would leak into params and logs.
        for field, url in (("checkpoint.endpoint_url", self.checkpoint.endpoint_url), ("tracking.tracking_uri", self.tracking.tracking_uri),
                           ("checkpoint.storage_path", self.checkpoint.storage_path)):
            if url and "://" in url and (urlsplit(url).password is not None or "@" in urlsplit(url).netloc):
                raise ValueError(f"{field}: credentials in a URL are refused (user:password@)")
        return self

    @model_validator(mode="after")
    def _cross_field(self) -> "JobSpec":
        workers = self.scaling.num_workers
        if self.train.global_batch % workers:
            raise ValueError(
                f"train.global_batch ({self.train.global_batch}) must be divisible by"
                f" scaling.num_workers ({workers})"
            )
        check_regularization(self.regularization, self.loss.kind)
        check_model(self.model, self.data.resolution)  # here, not discovered inside the workers
        if self.scaling.precision == "bf16" and not self.scaling.use_gpu:
            raise ValueError("scaling.precision bf16 needs scaling.use_gpu: true")
        return self

    @property
    def per_worker_batch(self) -> int:
        return self.train.global_batch // self.scaling.num_workers

    def sha256(self) -> str:
        """Identity of the resolved spec (tagged on the registered model)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


class SpecError(ValueError):
    """A job spec that does not validate; the message lists every offending field."""


def with_classes(spec: JobSpec, manifest: dict) -> JobSpec:
    """A conditional spec with `model.num_classes` and `model.class_names` taken from the data's
    manifest (the driver calls this before any worker starts); other specs unchanged.
    SpecError when the data have no class labels, or when the spec names a different class count."""
    from pipeline.data.manifest import class_names

    if not spec.model.conditional:
        return spec
    names = class_names(manifest)
    if names is None:
        raise SpecError(
            f"model.conditional: true, but the data at {spec.data.root} have no class labels"
            " (packed from a folder of class folders, or indexed with integer labels 0..K-1); set"
            " model.conditional: false, or pack/index labelled images")
    if len(names) < 2:
        raise SpecError(f"model.conditional: true needs at least 2 classes; the data at {spec.data.root} have {len(names)}")
    if spec.model.num_classes not in (None, len(names)):
        raise SpecError(f"model.num_classes: {spec.model.num_classes}, but the data at {spec.data.root} have {len(names)} classes")
    model = spec.model.model_copy(update={"num_classes": len(names), "class_names": tuple(names)})
    return spec.model_copy(update={"model": model})


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if isinstance(got, str):
        got = _USERINFO.sub("***@", got)  # a mistyped URL may carry credentials: never echo them
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"  {loc or '<job>'}: {msg}{shown}"


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`--set a.b=VALUE`, a regularizer by its kind (`regularization.r1.gamma=0.1`, see
    field_paths.py): VALUE is parsed as YAML so numbers, booleans and lists keep their types."""
    from pipeline.field_paths import AddressError, set_field

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            set_field(raw, key, yaml.safe_load(value))
        except AddressError as e:
            raise SpecError(f"--set {e}") from None
    return raw


def parse_job(raw: dict[str, Any], source: str = "<spec>") -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors(include_url=False)]
        raise SpecError(f"invalid job spec {source}:\n" + "\n".join(lines)) from None


def absolute_path(path: str) -> str:
    """A local path made absolute against this process's working folder, `~` expanded; a URL
    (s3://...) as it is."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def with_absolute_paths(spec: JobSpec) -> JobSpec:
    """The job with its local paths absolute: the one step `ganpipe train`, `submit` and `tune` all
    take before a spec leaves this process, because Ray workers, a submitted job and Tune trials run
    in other working folders, where a relative path names another place. It comes before the spec
    is hashed and is idempotent, so a resumed run (or search) compares its spec with the original's
    after the same step. data.root and checkpoint.storage_path name places every worker shares;
    eval.cache_dir is a per-machine cache, so a `~` there is left for each machine to expand (a
    relative one is made absolute like the others)."""
    data = spec.data.model_copy(update={"root": absolute_path(spec.data.root)})
    checkpoint = spec.checkpoint.model_copy(update={"storage_path": absolute_path(spec.checkpoint.storage_path)})
    update: dict[str, Any] = {"data": data, "checkpoint": checkpoint}
    if spec.eval is not None and not spec.eval.cache_dir.startswith("~"):
        update["eval"] = spec.eval.model_copy(update={"cache_dir": absolute_path(spec.eval.cache_dir)})
    return spec.model_copy(update=update)


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception] = SpecError) -> dict:
    """The YAML mapping in `path`; `error` names `what` the file is when it is unreadable or not a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise error(f"cannot read {what} {path}: {e}") from None
    if not isinstance(raw, dict):
        raise error(f"{what} {path} must be a YAML mapping")
    return raw


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    raw = read_yaml_mapping(path, "job spec")
    return parse_job(apply_overrides(raw, overrides or []), str(path))
