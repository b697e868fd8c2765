"""Shards as other tools write them: webdataset's own ShardWriter (pax headers, float mtimes),
`{key}.jpg` at mixed non-square sizes, the label inside `.json`, a caption in `.txt`, and
optionally one truncated JPEG. Used by the unit and integration tests of `data index`."""

from __future__ import annotations

import io
import os

import numpy as np
import webdataset as wds
from PIL import Image

CLASSES = 4


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def picture(width: int, height: int, label: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth picture a small GAN can learn: a class-coloured disc on a soft gradient."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 * np.ones_like(x)], axis=2) * 120 + 40
    colour = np.array([[230, 60, 60], [60, 200, 60], [60, 90, 230], [230, 220, 60]][label % CLASSES], np.float32)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    radius = min(width, height) * rng.uniform(0.2, 0.35)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < radius**2)[..., None]
    return np.where(disc, colour, base).clip(0, 255).astype(np.uint8)


def write_foreign_shards(
    folder: str,
    count: int,
    per_shard: int,
    *,
    sides: tuple[int, int] = (40, 120),
    corrupt: int | None = None,
    seed: int = 0,
) -> dict:
    """`count` samples in shards of `per_shard` under folder/shard-%06d.tar. Returns what was
    written: keys, labels, sizes (w, h) per key, and the corrupt key (its JPEG cut in half)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {"keys": [], "labels": {}, "sizes": {}, "corrupt": None}
    with wds.ShardWriter(os.path.join(folder, "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(count):
            key = f"img{i:06d}"
            w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, size=2))
            if w == h:
                w += 1  # non-square throughout
            label = i % CLASSES
            data = jpeg_bytes(picture(w, h, label, rng))
            if i == corrupt:
                data = data[: len(data) // 2]  # header intact, scan data cut: fails only when decoded
                written["corrupt"] = key
            sink.write({"__key__": key, "jpg": data, "json": {"label": label, "width": w, "height": h}, "txt": f"a disc of class {label}"})
            written["keys"].append(key)
            written["labels"][key] = label
            written["sizes"][key] = (w, h)
    return written
