"""DataSpec: where the shards live and how one rank streams them. The job spec embeds it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A member suffix as webdataset names it (lower-case, after the key's first dot): jpg, png, img.jpg, ...
_MEMBER = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")


class TransformSpec(BaseModel):
    """From an image of any size to the job's resolution, in the loader workers: scale the shorter
    side to `resize` (default: the resolution), cut a square of `resolution` (centre or random),
    maybe mirror. Packed shards are already at the resolution, so only crop/flip can change them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resize: int | None = Field(default=None, ge=8, description="shorter side before the crop; default: the resolution")
    crop: Literal["center", "random"] = "center"
    hflip: bool = Field(default=False, description="mirror half of the samples left-right")


class DataSpec(BaseModel):
    # hide_input_in_errors: a mistyped endpoint may hold a secret; errors end up in logs.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    root: str = Field(description="local folder or s3://bucket/prefix holding manifest.json and the shards")
    shards: str | None = Field(
        default=None,
        description='brace pattern relative to root, e.g. "shard-{000000..000002}.tar"; default: every shard in the manifest',
    )
    resolution: int = Field(default=32, description="image side in pixels; must equal the manifest's image size")
    shuffle_buffer: int = Field(
        default=1000,
        ge=0,
        description="raw samples held in memory for shuffling; 0 = no shuffle. resampled: a webdataset shuffle "
        "buffer across shards; epoch: the window permuted inside each shard (shard order is permuted too)",
    )
    sampling: Literal["resampled", "epoch"] = "resampled"
    epoch_tail: Literal["drop", "pad"] = Field(
        default="drop", description="epoch mode: drop the samples that do not fill a batch on every rank, or pad by repeating"
    )
    loader_workers: int = Field(default=0, ge=0, description="torch DataLoader worker processes per rank")
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); else AWS_ENDPOINT_URL_S3 or boto3's default"
    )
    on_corrupt: Literal["fail", "skip"] = "fail"
    max_corrupt_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    image_key: str = Field(
        default="auto",
        description="member holding the image (jpg, jpeg, png, webp, or another suffix); auto: what the manifest found",
    )
    label_key: str = Field(
        default="auto",
        description="where the integer label is: cls, json.<field>[.<field>...], or none; auto: what the manifest found",
    )
    transform: TransformSpec = Field(default_factory=TransformSpec)

    @field_validator("image_key")
    @classmethod
    def _image_key_is_suffix(cls, value: str) -> str:
        value = value.strip().lower().lstrip(".")
        if value != "auto" and not _MEMBER.match(value):
            raise ValueError(f"image_key must be auto or a member suffix such as jpg, png, webp; got {value!r}")
        return value

    @field_validator("label_key")
    @classmethod
    def _label_key_known(cls, value: str) -> str:
        value = value.strip()
        if value in ("auto", "none", "cls") or (value.startswith("json.") and all(value.split(".")[1:])):
            return value
        raise ValueError(f"label_key must be auto, none, cls or json.<field> (e.g. json.label); got {value!r}")

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("root must name a local folder or an s3://bucket/prefix")
        if value.startswith("s3://") and len(value) <= len("s3://"):
            raise ValueError("root s3:// URL needs a bucket, e.g. s3://bucket/prefix")
        if "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # never echo the value: s3://KEY:SECRET@bucket would put the secret into the error
            raise ValueError("root must not carry credentials (user:password@); use the boto3 chain (env, profile, role)")
        if "://" in value and not value.startswith("s3://"):
            raise ValueError(f"root {value.split('://', 1)[0]}://...: only local paths and s3:// URLs are supported")
        return value.rstrip("/") if value not in ("/",) else value

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        # The generator and discriminator double/halve the side at every block: only powers of two
        # land exactly on the 4x4 base, and 8 is the smallest that leaves one block.
        if value < 8 or value & (value - 1):
            raise ValueError(f"resolution must be a power of two >= 8 (8, 16, 32, ...), got {value}")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must start with http:// or https://, got {value!r}")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # never echo the value: it would put the secret into the error, and from there into logs
            raise ValueError("endpoint_url must not carry credentials (user:password@); use the boto3 chain (env, profile, role)")
        return value

    @model_validator(mode="after")
    def _skip_needs_budget(self) -> "DataSpec":
        # "skip" with a zero budget would fail on the first corrupt sample, i.e. behave like "fail"
        # while the job says otherwise: ask for an explicit budget instead of guessing one.
        if self.on_corrupt == "skip" and self.max_corrupt_fraction <= 0.0:
            raise ValueError("on_corrupt='skip' needs max_corrupt_fraction > 0 (the share of samples allowed to be corrupt)")
        if self.transform.resize is not None and self.transform.resize < self.resolution:
            raise ValueError(
                f"transform.resize {self.transform.resize} is smaller than resolution {self.resolution}: "
                "the crop of resolution x resolution must fit inside the resized image"
            )
        return self
