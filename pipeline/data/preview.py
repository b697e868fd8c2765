"""`data preview`: a grid of samples as the model will see them, to catch sideways photos, washed-out
16-bit scans or wrong labels before a run spends hours on them.

Each sample goes through the decoder evaluation uses (decode_config(..., for_eval=True): centre
crop, no flip), so the grid shows exactly what training sees minus the random crop/flip. Tiles are
row-major, in shard order (the first n samples) or in the order of a seeded random draw, with the
label under each tile when the samples have one (the class name when the manifest lists classes).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.data.config import DataSpec
from pipeline.data.decode import SampleDecoder, decode_config
from pipeline.data.errors import CorruptSampleError, DataError
from pipeline.data.manifest import load_manifest, manifest_resolution, shard_url
from pipeline.data.reader import iter_shard

DEFAULT_RESOLUTION = 64  # indexed shards come at any size: a side large enough to judge them by eye
PAD = 2  # black between tiles, as pipeline/eval/grid.py draws sample grids
LABEL_BAND = 12  # pixels under each tile for its label (the default font is ~10 px tall)


@dataclass
class Preview:
    image: Image.Image
    keys: list[str] = field(default_factory=list)  # tile order, row-major
    labels: list[int] = field(default_factory=list)  # -1: the sample has no label
    skipped: list[str] = field(default_factory=list)  # corrupt samples left out, as the decoder named them
    resolution: int = 0


def preview(
    root: str, *, n: int = 64, shuffle: bool = False, seed: int = 0, resolution: int | None = None, endpoint_url: str | None = None
) -> Preview:
    """The first `n` decodable samples under root in shard order, or (`shuffle`) `n` drawn at
    random without replacement, seeded. Corrupt samples are left out and named in `skipped`."""
    manifest, _ = load_manifest(root, endpoint_url=endpoint_url)
    packed = manifest_resolution(manifest)
    side = resolution or packed or DEFAULT_RESOLUTION
    if packed is not None and side != packed:
        raise DataError(f"--resolution {side}: the packed shards under {root} hold {packed} px images; leave it out or pass {packed}")
    spec = DataSpec(root=root, resolution=side, endpoint_url=endpoint_url)
    decoder = SampleDecoder(decode_config(spec, manifest, for_eval=True))
    urls = [shard_url(root, manifest, s) for s in manifest["shards"]]
    counts = [int(s["samples"]) for s in manifest["shards"]]
    raws = _drawn(urls, counts, n, seed, endpoint_url) if shuffle else _in_order(urls, endpoint_url)
    tiles, result = [], Preview(image=None, resolution=side)
    for raw in raws:
        if len(tiles) == n:
            break
        try:
            array, label = decoder(raw)
        except CorruptSampleError as exc:
            result.skipped.append(str(exc))
            continue
        tiles.append(array)
        result.keys.append(raw["__key__"])
        result.labels.append(label)
    if not tiles:
        raise DataError(f"no decodable sample under {root}" + (f" ({len(result.skipped)} corrupt)" if result.skipped else ""))
    classes = manifest.get("classes") or None
    texts = [label_text(label, classes) for label in result.labels]
    result.image = render(tiles, texts if any(texts) else None)
    return result


def label_text(label: int, classes: list[str] | None) -> str:
    if label < 0:
        return ""
    return classes[label] if classes and label < len(classes) else str(label)


def render(tiles: list[np.ndarray], texts: list[str] | None = None) -> Image.Image:
    """Square HxWx3 uint8 tiles -> one RGB image, ceil(sqrt(N)) per row, each label (if any) in a
    band under its tile, cut to the tile's width."""
    n, side = len(tiles), tiles[0].shape[0]
    per_row = math.ceil(math.sqrt(n))
    rows = math.ceil(n / per_row)
    band = LABEL_BAND if texts else 0
    canvas = Image.new("RGB", (per_row * (side + PAD) + PAD, rows * (side + band + PAD) + PAD))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        x, y = PAD + c * (side + PAD), PAD + r * (side + band + PAD)
        canvas.paste(Image.fromarray(tile, mode="RGB"), (x, y))
        text = texts[i] if texts else ""
        while text and draw.textlength(text, font=font) > side:
            text = text[:-1]
        if text:
            draw.text((x, y + side), text, fill=(255, 255, 255), font=font)
    return canvas


def _in_order(urls: list[str], endpoint_url: str | None) -> Iterator[dict]:
    for url in urls:
        yield from iter_shard(url, endpoint_url=endpoint_url)


def _drawn(urls: list[str], counts: list[int], n: int, seed: int, endpoint_url: str | None) -> Iterator[dict]:
    """`n` samples at random positions of the whole set, in draw order. Each shard that holds one is
    read once, front to back, and only up to its last drawn sample: no shard is read in full for a
    preview of a few of its samples."""
    total = sum(counts)
    picks = random.Random(seed).sample(range(total), min(n, total))
    starts = np.cumsum([0] + counts[:-1])
    by_shard: dict[int, set[int]] = {}
    for p in picks:
        shard = int(np.searchsorted(starts, p, side="right")) - 1
        by_shard.setdefault(shard, set()).add(p - int(starts[shard]))
    kept: dict[int, dict] = {}
    for shard, wanted in sorted(by_shard.items()):
        for i, raw in enumerate(iter_shard(urls[shard], endpoint_url=endpoint_url)):
            if i in wanted:
                kept[int(starts[shard]) + i] = raw
            if i >= max(wanted):
                break
    for p in picks:
        if p in kept:  # a shard shorter than its manifest says: that sample is simply not shown
            yield kept[p]
