"""What a store knows about one object, without reading it: the record both store.py (local folders)
and s3.py (S3 objects) return. Its own module so that s3.py need not import store.py, which imports
s3.py (lazily) for every s3:// URL."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # recorded at upload time (S3 metadata); None where the store does not keep it
    version: str | None = None  # changes when the bytes may have: S3 ETag, local mtime in ns
