"""Pinned feature extractors: images (N, 3, H, W) in [-1, 1] → features (N, D) float32 on CPU.

Two kinds, both fixed for a given cache key so scores stay comparable across runs:
- classifier: trained once per (data manifest, settings) on the real labelled images, then cached;
- inception: a TorchScript file the spec names, verified by sha256. Nothing is downloaded, ever.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from typing import Callable
from urllib.parse import unquote, urlparse

import torch
import torch.nn.functional as F
from torch import Tensor

from . import classifier as clf
from .config import EvalSpec, extractor_key

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLASSIFIER_SEED = 0  # part of the recipe, hence covered by FEATURES_VERSION in the key


class InceptionWeightsMissing(FileNotFoundError):
    pass


class InceptionWeightsMismatch(ValueError):
    pass


class Extractor:
    """A callable with a name and a report (e.g. the classifier's held-out accuracy) to log.
    `classify`, where the feature space has a class head (the classifier's): features → label values."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], *, report: dict | None = None,
                 batch_size: int = 250, classify: Callable[[Tensor], Tensor] | None = None):
        self.name, self._fn, self.report, self.batch_size = name, fn, report or {}, batch_size
        self.classify = classify

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        out = [self._fn(chunk).float().cpu() for chunk in images.split(self.batch_size)]
        return torch.cat(out)


def load_extractor(spec: EvalSpec, manifest_sha256: str,
                   real_images_fn: Callable[[], tuple[Tensor, Tensor]], *,
                   device: str | torch.device = "cpu") -> Extractor:
    """The spec's extractor. `real_images_fn` is called only when a classifier must be trained."""
    if spec.extractor == "inception":
        return _inception(spec, device)
    return _classifier(spec, manifest_sha256, real_images_fn, device)


# --- classifier -------------------------------------------------------------------------------

def classifier_path(spec: EvalSpec, manifest_sha256: str) -> str:
    """Where the classifier trained for (data snapshot, settings) is cached."""
    return os.path.join(os.path.expanduser(spec.cache_dir), extractor_key(spec, manifest_sha256), "classifier.pt")


def _classifier(spec: EvalSpec, manifest_sha256: str, real_images_fn, device) -> Extractor:
    path = classifier_path(spec, manifest_sha256)
    if os.path.exists(path):
        model = clf.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
    else:
        images, labels = real_images_fn()
        if labels is None:
            raise ValueError("extractor 'classifier' needs the shards' `cls` labels, and this data set "
                             "has none: use extractor 'inception' (with local weights) instead")
        model = clf.train_classifier(images, labels, steps=spec.classifier_steps,
                                     width=spec.classifier_width, seed=CLASSIFIER_SEED)
        atomic_torch_save(clf.to_checkpoint(model), path)
    model.to(device)
    return Extractor("classifier", lambda x: model.features(x.to(device)), report=model.report,
                     batch_size=500, classify=model.classify_features)


def atomic_torch_save(obj, path: str) -> None:
    # Write beside the target, then rename: a reader (another rank, a crashed run's successor)
    # sees either no file or a whole one, never a torn write.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --- inception --------------------------------------------------------------------------------

def _local_path(path_or_uri: str) -> str:
    parsed = urlparse(path_or_uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # len 1: a Windows drive letter, not a scheme
        raise ValueError(f"inception_path {path_or_uri!r}: only local paths and file:// URIs are read; "
                         "copy the file onto this machine (nothing is downloaded at run time)")
    return os.path.expanduser(path_or_uri)


_sha_memo: dict[tuple, str] = {}


def file_sha256(path: str) -> str:
    # The Inception file is ~100 MB and is checked at every eval interval: remember the digest for an
    # unchanged file (same inode, size and mtime).
    st = os.stat(path)
    memo_key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if memo_key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_memo[memo_key] = h.hexdigest()
    return _sha_memo[memo_key]


def _inception(spec: EvalSpec, device) -> Extractor:
    path, want = _local_path(spec.inception_path), spec.inception_sha256
    if not os.path.isfile(path):
        raise InceptionWeightsMissing(
            f"Inception-v3 feature weights not found at {path} (expected sha256 {want}). Nothing is "
            f"downloaded at run time: on a machine with network access run\n"
            f"  curl -L -o inception-2015-12-05.pt {INCEPTION_URL}\n"
            f"  sha256sum inception-2015-12-05.pt   # must print {want}\n"
            f"then copy the file to {path} (or point eval.inception_path at it)."
        )
    got = file_sha256(path)
    if got != want:
        raise InceptionWeightsMismatch(
            f"Inception weights at {path} have sha256 {got}, but the spec pins {want}: "
            "wrong or corrupted file, or a stale inception_sha256 in the job spec"
        )
    with warnings.catch_warnings():
        # torch 2.1x deprecates TorchScript, but the pinned reference network is published only as a
        # TorchScript file; the warning would repeat at every eval interval and help no one.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
        net = torch.jit.load(path, map_location=device).eval()
    # stylegan2-ada's file is called as net(img, return_features=True) for the 2048-d pool features;
    # pass the flag only to a module whose forward takes it.
    args = {a.name for a in net.forward.schema.arguments}
    kwargs = {"return_features": True} if "return_features" in args else {}

    def run(x: Tensor) -> Tensor:
        # Match stylegan2-ada's FID: quantize to uint8 levels first (what saving a PNG would do:
        # x*127.5+128, clamp, truncate), then resize to 299 bilinearly (the file's own resize is then
        # the identity), and hand over floats in 0..255, which the file normalises itself.
        x = (x.to(device).float() * 127.5 + 128).clamp(0, 255).floor()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return net(x, **kwargs).reshape(len(x), -1)

    return Extractor("inception", run, report={"inception_sha256": got}, batch_size=64)
