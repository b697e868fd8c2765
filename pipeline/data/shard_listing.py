"""Which shards a `data index SHARDS` argument names: a brace pattern, an s3:// prefix or a folder.

Every shard comes with its size and version (S3 ETag, local mtime) so that an interrupted index
can tell a shard it already read from one that changed since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from braceexpand import braceexpand

from pipeline.data import store
from pipeline.data.errors import DataError
from pipeline.data.object_info import ObjectInfo
from pipeline.data.stat_many import stat_many


@dataclass(frozen=True)
class ShardListing:
    base: str  # folder or s3:// prefix the shard names are relative to
    shards: dict[str, ObjectInfo]  # name (relative to base, "/"-separated) -> size and version

    def url(self, name: str) -> str:
        return store.join(self.base, name)


def list_shards(spec: str, endpoint_url: str | None = None) -> ShardListing:
    """Resolve SHARDS. A brace pattern must name only shards that exist: a missing one is an error
    naming every absent URL (a gap in a numbered set usually means an upload that failed)."""
    spec = spec.strip()
    if not spec:
        raise DataError("SHARDS is empty: give a brace pattern, an s3:// prefix or a local folder")
    if "://" in spec and not store.is_s3(spec):
        raise DataError(f"SHARDS {spec!r}: only local paths and s3:// URLs are supported")
    if "{" in spec:
        return _pattern(spec, endpoint_url)
    if store.is_s3(spec):
        base = spec.rstrip("/")
        if base.endswith(".tar"):  # one shard named directly
            return _pattern(base, endpoint_url)
        found = store.list_tars(base, endpoint_url=endpoint_url)
        if not found:
            raise DataError(f"no .tar objects under {base}/")
        return ShardListing(base, {url[len(base) + 1 :]: info for url, info in found.items()})
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isfile(path):
        return _pattern(path, endpoint_url)
    if not os.path.isdir(path):
        raise DataError(f"SHARDS {spec!r}: no such folder or file")
    found = store.list_tars(path)
    if not found:
        raise DataError(f"no .tar files under {path}")
    return ShardListing(path, {os.path.relpath(p, path).replace(os.sep, "/"): info for p, info in found.items()})


def _pattern(pattern: str, endpoint_url: str | None) -> ShardListing:
    head = pattern.split("{", 1)[0]
    cut = head.rfind("/")
    if cut < 0:  # a relative local pattern with no folder part
        base, rest = os.getcwd(), pattern
    else:
        base, rest = pattern[:cut], pattern[cut + 1 :]
    if not store.is_s3(base):
        base = os.path.abspath(os.path.expanduser(base or "/"))
    names = list(dict.fromkeys(braceexpand(rest)))  # keep order, drop repeats
    urls = [store.join(base, n) for n in names]
    # One LIST page per 1,000 shards rather than a HEAD each (stat_many.py).
    infos = stat_many(urls, endpoint_url=endpoint_url)
    missing = [u for u, info in zip(urls, infos) if info is None]
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DataError(f"{len(missing)} of the {len(urls)} shards named by {pattern} do not exist:\n  {shown}")
    return ShardListing(base, dict(zip(names, infos)))
