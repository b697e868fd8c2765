"""S3 access for the data plane: one boto3 client per process, small-object helpers, idempotent
uploads, and the resumable range reader registered as webdataset's `s3://` scheme.

One of the three places allowed to read the environment: AWS_ENDPOINT_URL_S3 here, and boto3's
own chain (env vars, profiles, instance roles) for credentials. Credentials are never logged or
returned: log lines carry bucket/key URLs and attempt counts only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import threading
import time

import boto3
import boto3.exceptions
import botocore.exceptions
import webdataset as wds
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from pipeline.data.errors import DataError, StorageAccessError
from pipeline.data.object_info import ObjectInfo

log = logging.getLogger(__name__)

# boto3 reads a streaming body with whatever size the caller asks for; tarfile asks for 10 KiB.
# A 1 MiB buffer in front keeps HTTP reads large (fewer syscalls, fewer Python frames per byte).
READ_CHUNK = 1 << 20
# Resumes of one shard body that make no progress before we give up; progress resets the count,
# so a long shard survives many separate drops but a dead endpoint fails within seconds.
MAX_STALLED_RESUMES = 8
# Chunks fetched ahead of the decoder per open shard (x READ_CHUNK bytes of memory each).
SHARD_READ_AHEAD = 4
# botocore retries 5xx and throttling (SlowDown, 503) on the request itself, with jittered
# exponential backoff; "standard" mode bounds the attempts.
_RETRIES = {"max_attempts": 8, "mode": "standard"}

_clients: dict[tuple[int, str | None], object] = {}
_clients_lock = threading.Lock()


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None


def client(endpoint_url: str | None = None):
    """The process's client for an endpoint. Keyed by pid: a client inherited through fork shares
    its connection pool's sockets with the parent, so a forked DataLoader worker builds its own."""
    endpoint = resolve_endpoint(endpoint_url)
    key = (os.getpid(), endpoint)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            config = Config(
                retries=_RETRIES,
                connect_timeout=10,
                read_timeout=30,
                max_pool_connections=32,
                # Custom endpoints (MinIO, moto, Ceph) rarely have wildcard DNS for bucket subdomains.
                s3={"addressing_style": "path"} if endpoint else None,
            )
            found = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
            _clients[key] = found
        return found


def parse(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url.split('://', 1)[0]}://...")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url}")
    if "@" in bucket:  # s3://KEY:SECRET@bucket/...: botocore would echo it back as the bucket name
        raise DataError("an s3:// URL must not carry credentials (user:password@); use the boto3 chain (env, profile, role)")
    return bucket, key


def _is_missing(exc: botocore.exceptions.ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


# How the fix reads when S3 says no: the places credentials and permissions come from.
_ACCESS_FIX = ("check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role), "
               "the bucket's permissions and the endpoint (AWS_ENDPOINT_URL_S3)")


@contextlib.contextmanager
def _access(url: str):
    """Turn S3's refusals into one StorageAccessError naming the URL. Only the error code goes into
    the message: S3's own text and response fields can carry the access key id. Connection errors
    pass through untouched: the range reader resumes after them."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError:
        raise StorageAccessError(f"no S3 credentials found to read or write {url}: {_ACCESS_FIX}") from None
    except (botocore.exceptions.ClientError, boto3.exceptions.S3UploadFailedError) as exc:
        # upload_file wraps S3's answer in S3UploadFailedError (its message quotes S3's text): the
        # answer is then its context.
        answer = exc if isinstance(exc, botocore.exceptions.ClientError) else exc.__context__
        if isinstance(answer, botocore.exceptions.ClientError) and (refused := _refusal(url, answer)):
            raise refused from None
        raise


def _refusal(url: str, exc: botocore.exceptions.ClientError) -> StorageAccessError | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status not in (401, 403):
        return None
    code = exc.response.get("Error", {}).get("Code") or status
    return StorageAccessError(f"S3 refused access to {url} ({code}): {_ACCESS_FIX}")


def head(url: str, endpoint_url: str | None = None) -> ObjectInfo | None:
    bucket, key = parse(url)
    try:
        with _access(url):
            answer = client(endpoint_url).head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if _is_missing(exc):
            return None
        raise
    return ObjectInfo(
        size=int(answer["ContentLength"]), sha256=answer.get("Metadata", {}).get("sha256"), version=answer.get("ETag")
    )


def list_objects(prefix_url: str, *, suffix: str = "", endpoint_url: str | None = None) -> dict[str, ObjectInfo]:
    """{s3 URL: info} of every object under a prefix whose key ends with `suffix`, sorted by URL.
    A prefix naming a "folder" lists inside it only: s3://b/data never picks up s3://b/data-old/."""
    bucket, key = parse(prefix_url)
    prefix = key.rstrip("/") + "/" if key else ""
    found = {}
    try:
        with _access(prefix_url):
            for page in client(endpoint_url).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if item["Key"].endswith(suffix):
                        found[f"s3://{bucket}/{item['Key']}"] = ObjectInfo(size=int(item["Size"]), sha256=None, version=item.get("ETag"))
    except botocore.exceptions.ClientError as exc:
        if _is_missing(exc):
            raise DataError(f"bucket of {prefix_url} does not exist") from None
        raise
    return dict(sorted(found.items()))


def get_bytes(url: str, endpoint_url: str | None = None) -> bytes:
    """A whole small object, read through the resumable reader. FileNotFoundError when absent."""
    with open_reader(url, endpoint_url=endpoint_url) as f:
        return f.read()


def put_bytes(url: str, body: bytes, endpoint_url: str | None = None) -> None:
    bucket, key = parse(url)
    with _access(url):
        client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=body)


def upload_if_changed(
    local_path: str, url: str, sha256: str, *, endpoint_url: str | None = None, multipart_threshold: int = 64 << 20
) -> bool:
    """Upload a file unless an object with the same size and recorded sha256 is already there.
    Returns whether bytes were sent. The sha256 rides along as object metadata because a multipart
    ETag is not a content hash. Files over the threshold go up in parallel multipart parts."""
    existing = head(url, endpoint_url=endpoint_url)
    size = os.path.getsize(local_path)
    if existing is not None and existing.size == size and existing.sha256 == sha256:
        return False
    bucket, key = parse(url)
    transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=max(multipart_threshold, 5 << 20))
    with _access(url):
        client(endpoint_url).upload_file(local_path, bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}}, Config=transfer)
    return True


# Errors a body read can end with when the connection drops mid-stream. botocore does not retry
# a streaming body (only the request that opened it), so these are ours to resume from.
_BODY_ERRORS = (
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.EndpointConnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class RangeReader(io.RawIOBase):
    """A GetObject body that survives dropped connections: after a failed or short read it asks
    again with `Range: bytes=<reached>-` and `If-Match: <ETag>`, so the bytes that follow are the
    same object's (a replaced object fails with a clear error instead of splicing two versions)."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        super().__init__()
        self.url = url
        self.bucket, self.key = parse(url)
        self.endpoint_url = endpoint_url
        self.pos = 0
        self.size: int | None = None
        self.etag: str | None = None
        self.resumes = 0
        self._body = None
        self._open()

    def _open(self) -> None:
        args = {"Bucket": self.bucket, "Key": self.key}
        if self.pos:
            args["Range"] = f"bytes={self.pos}-"
        if self.etag:
            args["IfMatch"] = self.etag
        try:
            with _access(self.url):
                answer = client(self.endpoint_url).get_object(**args)
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(self.url) from None
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412"):
                raise DataError(f"{self.url} changed while it was being read (ETag no longer {self.etag})") from None
            raise
        if self.etag is None:
            self.etag = answer.get("ETag")
            self.size = int(answer["ContentLength"])
        self._body = answer["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.size is not None and self.pos >= self.size:
            return 0
        stalled = 0
        while True:
            try:
                if self._body is None:
                    self._open()
                data = self._body.read(len(buffer))
                if not data:  # the server closed early without an error: resume like any drop
                    raise ConnectionError(f"body ended at byte {self.pos} of {self.size}")
            except _BODY_ERRORS as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                self._drop_body()
                stalled += 1
                self.resumes += 1
                if stalled > MAX_STALLED_RESUMES:
                    raise DataError(f"{self.url}: reading stopped at byte {self.pos} after {stalled - 1} resumes: {exc}") from exc
                log.info("resuming %s at byte %d (%s)", self.url, self.pos, type(exc).__name__)
                time.sleep(min(2.0, 0.05 * 2 ** (stalled - 1)))
                continue
            n = len(data)
            buffer[:n] = data
            self.pos += n
            return n

    def _drop_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # the connection is already broken; nothing to salvage
                pass
        self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class ReadAhead(io.RawIOBase):
    """Keeps up to `depth` chunks of a RangeReader fetched ahead by a background thread, so the
    network (which releases the GIL) overlaps with tar parsing and PNG decoding instead of taking
    turns with them. Errors the reader gives up on are raised to the consumer in order."""

    _END = object()

    def __init__(self, reader: RangeReader, depth: int = 4, chunk: int = READ_CHUNK):
        super().__init__()
        self.reader = reader
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._fill, args=(chunk,), name=f"s3-read-ahead {reader.url}", daemon=True)
        self._thread.start()

    def _fill(self, chunk: int) -> None:
        try:
            while not self._stop.is_set():
                buffer = bytearray(chunk)
                n = self.reader.readinto(buffer)
                self._offer(memoryview(buffer)[:n] if n else self._END)
                if not n:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._offer(exc)

    def _offer(self, item) -> None:
        # Never block for good on a full queue: the consumer may have stopped reading (close()).
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current:
            if self._done:
                return 0
            item = self._queue.get()
            if item is self._END:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._current = item
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=5)
            self.reader.close()
        super().close()


def open_reader(url: str, endpoint_url: str | None = None, read_ahead: int = 0) -> io.BufferedReader:
    """A buffered, resumable reader of one object; `read_ahead` > 0 fetches that many 1 MiB chunks
    ahead on a thread (shards), 0 reads inline (small objects such as the manifest)."""
    raw: io.RawIOBase = RangeReader(url, endpoint_url=endpoint_url)
    if read_ahead > 0:
        raw = ReadAhead(raw, depth=read_ahead)
    return io.BufferedReader(raw, buffer_size=READ_CHUNK)


def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, endpoint_url: str | None = None, **_ignored):
    """webdataset gopen handler for s3:// (gopen passes url, mode, bufsize, then its keyword args)."""
    if mode != "rb":
        raise ValueError(f"{url}: the s3 reader is read-only (mode {mode!r}); pack uploads with upload_if_changed")
    return open_reader(url, endpoint_url=endpoint_url, read_ahead=SHARD_READ_AHEAD)


def register() -> None:
    """Make `s3://` URLs open through our reader anywhere webdataset calls gopen. Runs at import,
    so spawned/forkserver DataLoader workers, which re-import this module, register it too."""
    wds.gopen_schemes["s3"] = gopen_s3


register()
