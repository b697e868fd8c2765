"""Where images come from before packing: the bundled digits, a folder tree, or an .npz file.

Each source is an indexable list of (RGB uint8 array HxWx3, label or None) so that packing can
write samples in a fixed shuffled order without holding every decoded image at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from pipeline.data.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Source:
    name: str  # what the manifest records as "source"
    count: int
    load: Callable[[int], tuple[np.ndarray, int | None]]  # index -> (HxWx3 uint8, label)
    classes: list[str] | None = None  # label index -> class name, when labels come from names


def open_source(source: str) -> Source:
    if source == "digits":
        return _digits()
    if source.endswith(".npz"):
        return _npz(source)
    if os.path.isdir(source):
        return _folder(source)
    raise DataError(f"unknown source {source!r}: expected 'digits', a folder of images, or an .npz file")


def _digits() -> Source:
    # scikit-learn ships these 1,797 8x8 images inside the wheel: no download at run time.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are ink counts 0..16; map 16 -> 255 so the packed PNGs use the full byte range.
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(int)
    return Source(
        name="digits",
        count=len(grey),
        load=lambda i: (np.repeat(grey[i][:, :, None], 3, axis=2), int(labels[i])),
        classes=[str(d) for d in range(10)],  # the label is the digit: a conditional model reads 10 classes
    )


def _npz(path: str) -> Source:
    with np.load(path) as data:
        if "images" not in data:
            raise DataError(f"{path}: an .npz source needs an 'images' array (N,H,W[,C] uint8)")
        images = data["images"]
        labels = data["labels"] if "labels" in data else None
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"{path}: 'images' must be uint8 with shape (N,H,W) or (N,H,W,C), got {images.dtype} {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{path}: {len(labels)} labels for {len(images)} images")

    def load(i: int) -> tuple[np.ndarray, int | None]:
        return _to_rgb(images[i]), (None if labels is None else int(labels[i]))

    # Integer labels 0..K-1 carry their own class list (named by index), so a conditional model knows K.
    classes = [str(c) for c in range(int(labels.max()) + 1)] if labels is not None and labels.min() >= 0 else None
    return Source(name=os.path.basename(path), count=len(images), load=load, classes=classes)


def _folder(root: str) -> Source:
    # A sub-folder's name is the class; images directly under root have no label. Sorted walks
    # keep the index -> file mapping (and so the packed bytes) identical from run to run.
    files: list[tuple[str, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        cls = None if rel == "." else rel.split(os.sep)[0]
        files += [(os.path.join(dirpath, f), cls) for f in sorted(filenames) if f.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise DataError(f"{root}: no .png/.jpg images found")
    classes = sorted({c for _, c in files if c is not None})
    index = {c: i for i, c in enumerate(classes)}

    def load(i: int) -> tuple[np.ndarray, int | None]:
        path, cls = files[i]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise DataError(f"{path}: cannot read image: {exc}") from exc
        return array, (None if cls is None else index[cls])

    return Source(name=os.path.abspath(root), count=len(files), load=load, classes=classes or None)


def _to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return array[:, :, :3]
    if array.shape[2] != 3:
        raise DataError(f"images need 1, 3 or 4 channels, got {array.shape[2]}")
    return array


def resize_square(array: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square, then resize to resolution x resolution (bicubic: smooth upscaling of
    the 8x8 digits; on downscaling PIL's bicubic filters over the whole footprint, so no aliasing)."""
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(np.ascontiguousarray(array[top : top + side, left : left + side]), mode="RGB")
    if side != resolution:
        img = img.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(img)
