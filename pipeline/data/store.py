"""One small vocabulary for "a place holding shards": a local folder or s3://bucket/prefix.

Everything above this file (manifest, pack, verify) speaks URLs; only here do local paths and
S3 objects part ways. S3 work is delegated to `s3.py`, imported lazily so local-only use never
needs boto3 configured.
"""

from __future__ import annotations

import os

from pipeline.data.object_info import ObjectInfo


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(root: str, name: str) -> str:
    """Child URL of a root; S3 keys always use '/', local paths use the OS separator."""
    if is_s3(root):
        return root.rstrip("/") + "/" + name
    return os.path.join(root, name)


def stat(url: str, endpoint_url: str | None = None) -> ObjectInfo | None:
    """Size (and recorded sha256 if any) of one object, or None when it does not exist. Cheap: stat/HEAD."""
    if is_s3(url):
        from pipeline.data import s3

        return s3.head(url, endpoint_url=endpoint_url)
    try:
        found = os.stat(url)
    except FileNotFoundError:
        return None
    return ObjectInfo(size=found.st_size, sha256=None, version=str(found.st_mtime_ns))


def list_tars(root: str, endpoint_url: str | None = None) -> dict[str, ObjectInfo]:
    """Every `.tar` under a folder or s3:// prefix, at any depth: {URL: info}, sorted by URL."""
    return list_files(root, ".tar", endpoint_url)


def list_files(root: str, suffix: str, endpoint_url: str | None = None) -> dict[str, ObjectInfo]:
    """Every object whose name ends with `suffix` under a folder or s3:// prefix, at any depth:
    {URL: info}, sorted by URL. A folder that does not exist holds nothing."""
    if is_s3(root):
        from pipeline.data import s3

        return s3.list_objects(root, suffix=suffix, endpoint_url=endpoint_url)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(suffix):
                path = os.path.join(dirpath, name)
                info = stat(path)
                if info is not None:
                    found[path] = info
    return dict(sorted(found.items()))


def read_bytes(url: str, endpoint_url: str | None = None) -> bytes:
    """Whole small object (the manifest). Shards are streamed, never read through here."""
    if is_s3(url):
        from pipeline.data import s3

        return s3.get_bytes(url, endpoint_url=endpoint_url)
    with open(url, "rb") as f:
        return f.read()


def write_bytes(url: str, body: bytes, endpoint_url: str | None = None) -> None:
    """A whole small object. Local files go through a temporary name and a rename, so a reader
    (or a rerun after a crash) sees the old content or the new, never half of it; an S3 PUT is
    atomic already."""
    if is_s3(url):
        from pipeline.data import s3

        s3.put_bytes(url, body, endpoint_url=endpoint_url)
        return
    os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
    tmp = url + ".partial"
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, url)


def remove(url: str, endpoint_url: str | None = None) -> None:
    """Delete one object; one that is already gone is no error (S3 DeleteObject behaves so too)."""
    if is_s3(url):
        from pipeline.data import s3

        bucket, key = s3.parse(url)
        s3.client(endpoint_url).delete_object(Bucket=bucket, Key=key)
        return
    try:
        os.remove(url)
    except FileNotFoundError:
        pass
