"""Sentinel secrets and the byte search for them, shared by the secret sweeps (tests/integration/
test_secrets.py, tests/integration/ops/test_cluster_check.py).

A secret can land in three spellings: as written, URL-encoded (a password typed into a URL, a query
string) and base64-encoded (an HTTP basic-auth header, a JSON blob). The sentinels hold `/`, `+` and
`=` so the three differ; base64 is searched at the three byte alignments a secret can sit at inside a
longer encoded string ("admin:" + password in an Authorization header sits at offset 6).
"""
from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote, quote_plus

SENTINELS = {
    "AWS_ACCESS_KEY_ID": "AKIASENTINELKEY7Q2Z",
    "AWS_SECRET_ACCESS_KEY": "sentinel/s3+secret=9c41f7",
    "AWS_SESSION_TOKEN": "sentinel-session/token+5be2",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow/pw+30d8a1",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "sentinel-flask-key-77e0b3",  # the server's CSRF key
}


def base64_cores(secret: bytes) -> list[bytes]:
    """The parts of base64(... secret ...) that depend on the secret's bytes alone, for each of the
    three offsets (mod 3) the secret can start at: whatever surrounds it, one of them is in the text."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        start = 4 if offset else 0  # the first group mixes the filler with the secret
        end = (offset + len(secret)) // 3 * 4  # the last full group of the secret's own bytes
        cores.append(encoded[start:end])
    return cores


def needles(secret: str) -> dict[bytes, str]:
    """Every spelling searched for one secret → how to report it."""
    raw = secret.encode()
    found = {raw: "as written", quote(secret, safe="").encode(): "URL-encoded", quote_plus(secret).encode(): "URL-encoded"}
    found.update({core: "base64" for core in base64_cores(raw)})
    return found


ALL_NEEDLES = {n: f"{name} ({how})" for name, value in SENTINELS.items() for n, how in needles(value).items()}


def occurrences(files: list[tuple[str, bytes]], needle_map: dict[bytes, str] | None = None) -> list[str]:
    """'where: which secret (spelling)' for every needle found in any (name, content)."""
    needle_map = ALL_NEEDLES if needle_map is None else needle_map
    return [f"{name}: {what}" for name, data in files for n, what in needle_map.items() if n in data]


def local_files(root: Path) -> list[tuple[str, bytes]]:
    out = []
    for path in Path(root).rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and not path.is_socket():
                out.append((str(path), path.read_bytes()))
        except OSError:  # a file Ray removed between listing and reading
            continue
    return out


def bucket_objects(endpoint: str, bucket: str) -> list[tuple[str, bytes]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return [(f"s3://{bucket}/{k}", s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
