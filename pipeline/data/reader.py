"""The one reader training and `verify` share: shard URL -> raw samples -> decoded arrays.

Shards open through webdataset's gopen (so an s3:// URL goes through the handler registered in
s3.py); members are grouped into samples by tarstream.py, a lean tar reader (see why there). Decoding and the corrupt-sample policy
live here too, so that `verify` judges a sample exactly as training would.
"""

from __future__ import annotations

import io
from typing import Callable, Iterator

import numpy as np
import webdataset as wds
from PIL import Image

from pipeline.data import s3  # noqa: F401  (import registers the s3:// scheme in webdataset's gopen)
from pipeline.data.errors import CorruptSampleError, DataError
from pipeline.data.tarstream import iter_samples


def iter_shard(url: str, endpoint_url: str | None = None, tap: Callable[[bytes], None] | None = None) -> Iterator[dict]:
    """Raw samples of one shard in file order: dicts with __key__, __url__, png, cls (bytes).
    `tap` sees every byte of the shard, trailing tar padding included (verify hashes through it)."""
    stream = wds.gopen(url, "rb", endpoint_url=endpoint_url)
    if tap is not None:
        stream = _Tapped(stream, tap)
    try:
        yield from iter_samples(stream, url)
        if tap is not None:
            # tarfile stops at the end-of-archive marker; the bytes after it count for the sha256.
            while stream.read(READ_TAIL):
                pass
    finally:
        stream.close()


READ_TAIL = 1 << 20


class _Tapped:
    """A read-only file object that shows every byte it returns to a callback."""

    def __init__(self, inner, tap: Callable[[bytes], None]):
        self.inner, self.tap = inner, tap

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.tap(data)
        return data

    def close(self) -> None:
        self.inner.close()


def tar_samples(src: Iterator[dict], endpoint_url: str | None = None) -> Iterator[dict]:
    """Pipeline stage: {"url": ...} dicts -> raw samples (what wds.tarfile_to_samples does, plus
    our endpoint and a stream that is closed when the shard is done)."""
    for item in src:
        yield from iter_shard(item["url"], endpoint_url=endpoint_url)


def decode(raw: dict, resolution: int) -> tuple[np.ndarray, int]:
    """(HxWx3 uint8 image, label) of one raw sample; CorruptSampleError names shard and key."""
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    data = raw.get("png")
    if data is None:
        raise CorruptSampleError.of(url, key, f"no png member (members: {sorted(k for k in raw if not k.startswith('__'))})")
    try:
        # formats=["PNG"]: no probing of every registered format, and no surprise JPEG in a .png
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            array = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad bytes
        raise CorruptSampleError.of(url, key, f"cannot decode png: {exc}") from None
    if array.shape != (resolution, resolution, 3):
        raise CorruptSampleError.of(url, key, f"image is {array.shape[1]}x{array.shape[0]}, expected {resolution}x{resolution}")
    cls = raw.get("cls")
    try:
        label = int(cls) if cls is not None else -1
    except ValueError:
        raise CorruptSampleError.of(url, key, f"cls is not an integer: {cls[:20]!r}") from None
    return array, label


class CorruptPolicy:
    """on_corrupt: fail raises at the first corrupt sample; skip counts it and carries on until the
    distinct corrupt keys exceed max_corrupt_fraction of the data set. Counted per process: each
    loader worker sees part of the data, so it can only under-count, never double-count a key that
    a resampled stream draws twice."""

    def __init__(self, mode: str, max_fraction: float, num_samples: int):
        self.mode = mode
        self.budget = int(max_fraction * num_samples)
        self.corrupt_keys: set[tuple[str, str]] = set()
        self.skipped = 0  # events, including repeats of the same key in later epochs

    def handle(self, error: CorruptSampleError) -> None:
        if self.mode == "fail":
            raise error
        self.corrupt_keys.add((error.url or "?", error.key or "?"))
        self.skipped += 1
        if len(self.corrupt_keys) > self.budget:
            raise DataError(
                f"{len(self.corrupt_keys)} corrupt samples exceed max_corrupt_fraction (budget {self.budget}); "
                f"last: {error}"
            )
