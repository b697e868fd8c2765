"""One small vocabulary for "a place holding shards": a local folder or s3://bucket/prefix.

Everything above this file (manifest, pack, verify) speaks URLs; only here do local paths and
S3 objects part ways. S3 work is delegated to `s3.py`, imported lazily so local-only use never
needs boto3 configured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(root: str, name: str) -> str:
    """Child URL of a root; S3 keys always use '/', local paths use the OS separator."""
    if is_s3(root):
        return root.rstrip("/") + "/" + name
    return os.path.join(root, name)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # recorded at upload time (S3 metadata); None where the store does not keep it


def stat(url: str, endpoint_url: str | None = None) -> ObjectInfo | None:
    """Size (and recorded sha256 if any) of one object, or None when it does not exist. Cheap: stat/HEAD."""
    if is_s3(url):
        from pipeline.data import s3

        return s3.head(url, endpoint_url=endpoint_url)
    try:
        return ObjectInfo(size=os.stat(url).st_size, sha256=None)
    except FileNotFoundError:
        return None


def read_bytes(url: str, endpoint_url: str | None = None) -> bytes:
    """Whole small object (the manifest). Shards are streamed, never read through here."""
    if is_s3(url):
        from pipeline.data import s3

        return s3.get_bytes(url, endpoint_url=endpoint_url)
    with open(url, "rb") as f:
        return f.read()
