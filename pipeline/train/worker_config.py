"""What the driver hands every Ray Train worker: one small typed object instead of a loose dict.

Ray's TorchTrainer takes a plain dict as `train_loop_config`; the driver sends `as_dict()`, the
worker turns it back with `from_dict`, so a missing or misspelt key fails at once on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class WorkerConfig:
    spec: dict[str, Any]            # JobSpec.model_dump(mode="json"); re-validated on the worker
    tracking_uri: str
    run_id: str                     # the MLflow run rank 0 logs into (opened by the driver)
    manifest_sha256: str            # the data snapshot, for the scorer's cache key
    progress: Any = None            # a ray.util.queue.Queue for the driver's progress bar, or None
    record_keys: str | None = None  # a folder: each rank appends "<resumed from> <step> <key>" per sample (audits, tests)
    startup: dict[str, float] | None = None  # the driver's start-up marks (train/startup.py); rank 0 adds its own and logs them

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "WorkerConfig":
        return cls(**raw)
