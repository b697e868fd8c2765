"""One sample's bytes -> (HxWx3 uint8 image at the job's resolution, integer label).

Training, `verify` and evaluation all decode through SampleDecoder, so a sample is judged the same
everywhere. Two kinds of shards:
  packed  (`ganpipe data pack`): one png member at exactly the resolution, label in cls;
  indexed (`ganpipe data index`): jpg/jpeg/png/webp at any size, label in cls or inside json.

Why draft mode: for a 256 px JPEG going to 64 px, libjpeg-turbo can run its inverse DCT at 1/4
scale and hand over a 64 px image directly (Pillow's `Image.draft`), skipping most of the decode
work and all of a 256 px resample. `bench/data.py` measures it against a full decode + resize.
Draft only ever picks a scale that keeps the shorter side >= the resize target, so the final
resample always shrinks (or keeps) and never upscales a draft.

Images as other tools leave them: every mode Pillow opens (L, LA, P, RGBA, CMYK, 16-bit grey) ends
as 8-bit RGB, and a photo's EXIF orientation is applied before the crop, so it trains the right way
up. An image whose shorter side is below the resize target is enlarged, and counted (`upscaled`):
the stream reports the count instead of a warning per image.
"""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

from pipeline.data.errors import CorruptSampleError
from pipeline.data.reader import decode as decode_packed

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # what `image_key: auto` looks for, in this order
_FORMAT_OF = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_PROBE = ["JPEG", "PNG", "WEBP"]
# Greyscale at 16 bits per pixel as Pillow opens it (PNG: I;16, big-endian I;16B; older files and
# TIFF: 32-bit I holding 0..65535). 16-bit RGB(A) PNGs need nothing: Pillow already keeps their
# high byte and opens them as 8-bit RGB(A).
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class DecodeConfig:
    """Plain data (crosses into spawned loader workers): how to decode one kind of shard."""

    kind: str  # "packed" | "indexed"
    resolution: int
    image_key: str = "auto"  # a member suffix, or "auto": the first of IMAGE_KEYS present
    label_key: str | None = "cls"  # "cls", "json.a.b", or None (no labels: -1)
    resize: int | None = None  # shorter side before the crop; None = resolution
    crop: str = "center"  # "center" | "random"
    hflip: bool = False
    draft: bool = True  # JPEG DCT-domain downscaling; off only to measure it

    def as_dict(self) -> dict:
        return asdict(self)


def open_image(data: bytes, member: str) -> Image.Image:
    """Pillow image of one member, header read, pixels not yet decoded (size is known, cheap).
    The expected format first: Pillow then checks one magic number instead of every plugin's."""
    expected = _FORMAT_OF.get(member)
    formats = [expected] + [f for f in _PROBE if f != expected] if expected else None
    return Image.open(io.BytesIO(data), formats=formats)


def decode_config(spec, manifest: dict, *, for_eval: bool = False) -> DecodeConfig:
    """How the shards of `manifest` decode for a DataSpec. `for_eval`: centre crop, no flip (the
    reference images of FD/KID must not change from one evaluation to the next)."""
    kind = manifest.get("kind", "packed")
    image_key, label_key = spec.image_key, spec.label_key
    if image_key == "auto":
        image_key = "png" if kind == "packed" else manifest.get("image_key", "auto")
    if label_key == "auto":
        label_key = "cls" if kind == "packed" else manifest.get("label_key")
    t = spec.transform
    return DecodeConfig(
        kind=kind,
        resolution=spec.resolution,
        image_key=image_key,
        label_key=None if label_key in (None, "none") else label_key,
        resize=t.resize,
        crop="center" if for_eval else t.crop,
        hflip=False if for_eval else t.hflip,
    )


class SampleDecoder:
    def __init__(self, config: DecodeConfig | dict):
        self.config = config if isinstance(config, DecodeConfig) else DecodeConfig(**config)
        c = self.config
        self.resize = c.resize or c.resolution
        # Packed shards already hold the resolution: with the default transform there is nothing to do.
        self.identity = c.resize in (None, c.resolution) and c.crop == "center" and not c.hflip
        # Images this decoder enlarged (shorter side < resize): the loader reports the count as a stat.
        self.upscaled = 0

    def __call__(self, raw: dict, aug_seed: int = 0) -> tuple[np.ndarray, int]:
        """(image, label) of one raw sample; CorruptSampleError names shard and key. `aug_seed`
        feeds random crop/flip: the same (seed, shard, key) always gets the same crop and flip,
        which keeps a resumed epoch identical to an uninterrupted one."""
        c = self.config
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        rng = random.Random(f"{aug_seed}:{url}:{key}") if (c.crop == "random" or c.hflip) else None
        if c.kind == "packed":
            array, label = decode_packed(raw, c.resolution)
            label = label if c.label_key is not None else -1
            if self.identity:
                return array, label
            image = Image.fromarray(array, mode="RGB")
        else:
            image = self._open(raw, url, key)
            label = self._label(raw, url, key)
        try:
            image = self._fit(image, rng)
            array = np.asarray(image)
        except CorruptSampleError:
            raise
        except Exception as exc:  # truncated or garbled data surfaces when pixels are decoded
            raise CorruptSampleError.of(url, key, f"cannot decode image: {exc}") from None
        return array, label

    # -- image ---------------------------------------------------------------------------------
    def _open(self, raw: dict, url: str, key: str) -> Image.Image:
        member = self._member(raw, url, key)
        try:
            return open_image(raw[member], member)
        except Exception as exc:
            raise CorruptSampleError.of(url, key, f"cannot decode {member}: {exc}") from None

    def _member(self, raw: dict, url: str, key: str) -> str:
        wanted = IMAGE_KEYS if self.config.image_key == "auto" else (self.config.image_key,)
        for member in wanted:
            if member in raw:
                return member
        present = sorted(k for k in raw if not k.startswith("__"))
        raise CorruptSampleError.of(url, key, f"no {'/'.join(wanted)} member (members: {present})")

    def _fit(self, image: Image.Image, rng: random.Random | None) -> Image.Image:
        """Shorter side -> resize, then a resolution-square crop, as one resample of a box."""
        c, side = self.config, self.config.resolution
        w, h = image.size
        if c.draft and image.format == "JPEG" and self.resize * 2 <= min(w, h):
            scale = self.resize / min(w, h)
            # One scale for both sides, so the draft is right whichever way the EXIF turns it below.
            image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        image = to_rgb(upright(image))
        w, h = image.size  # after draft (1/2, 1/4 or 1/8 of the original) and the EXIF turn
        if min(w, h) < self.resize:
            self.upscaled += 1
        # The crop, measured in source pixels: `side` output pixels at `resize/short` output per source.
        box_side = side * min(w, h) / self.resize
        free_x, free_y = w - box_side, h - box_side
        if c.crop == "random" and rng is not None:
            left, top = rng.uniform(0, free_x), rng.uniform(0, free_y)
        else:
            left, top = free_x / 2, free_y / 2
        if (w, h) != (side, side) or box_side != side:
            # BICUBIC as in `pack`: Pillow widens the filter by the shrink factor, so no aliasing.
            image = image.resize((side, side), Image.BICUBIC, box=(left, top, left + box_side, top + box_side))
        if c.hflip and rng is not None and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    # -- label ---------------------------------------------------------------------------------
    def _label(self, raw: dict, url: str, key: str) -> int:
        """The integer label, or -1 where the sample has none (unlabelled samples are not corrupt)."""
        label_key = self.config.label_key
        if label_key is None:
            return -1
        if label_key == "cls":
            value = raw.get("cls")
            if value is None:
                return -1
            try:
                return int(value)
            except ValueError:
                raise CorruptSampleError.of(url, key, f"cls is not an integer: {value[:20]!r}") from None
        return label_from_json(raw, label_key, url, key)


def upright(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it: EXIF orientation 2-8 (a phone held sideways) turned into
    pixels. In place: no copy of the common image without an orientation. Decodes the pixels (at
    the draft scale when one is set), so a truncated file fails here."""
    ImageOps.exif_transpose(image, in_place=True)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any mode Pillow opens."""
    if image.mode in _WIDE_GREY:
        # Pillow's own I;16 -> L conversion clips at 255, so most of a 16-bit picture comes out white.
        # Scale instead: 65535 / 257 = 255 exactly (rounded division: black stays 0, white 255).
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # What lies under a transparent pixel is undefined (often black): matte on white, as
        # img2dataset does, so a transparent background never trains as a black one.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def label_from_json(raw: dict, label_key: str, url: str = "?", key: str = "?") -> int:
    """json.a.b -> int(json["a"]["b"]); -1 when the member or the field is absent."""
    data = raw.get("json")
    if data is None:
        return -1
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise CorruptSampleError.of(url, key, f"json member is not valid JSON: {exc}") from None
    for part in label_key.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return -1
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CorruptSampleError.of(url, key, f"{label_key} is not an integer: {str(value)[:20]!r}")
    try:
        return int(value)
    except ValueError:
        raise CorruptSampleError.of(url, key, f"{label_key} is not an integer: {value[:20]!r}") from None
