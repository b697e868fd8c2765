"""EvalSpec: which feature extractor scores the generator, and the cache key for what it learns.

The spec owns only what changes a number: the extractor and its settings. The data set is identified
by the manifest's sha256 (the data plane writes it), so `extractor_key` = hash(manifest, extractor
settings) names everything derived from both: the trained classifier and the reference statistics.
`evaluator_key` extends it with what else changes a score (the real images read, the held-out split,
the precision/recall and memorization definitions): scores under different keys never compare.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.data.split import SPLIT_RULE

from .rules import MEMORIZATION_QUANTILE, MEMORIZATION_SAMPLES, NHOOD_K, VIEWS_RULE  # torch-free (rules.py)

# Bump when a code change alters the features an unchanged spec produces (architecture, training
# recipe, preprocessing): old cache entries then stop matching instead of being silently reused.
FEATURES_VERSION = 1

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    extractor: Literal["classifier", "inception"] = "classifier"
    # Generated samples per evaluation. FD is biased upward at small n (it shrinks roughly like 1/n),
    # so only compare scores computed with the same num_samples. At least 4: recall's k-NN radii
    # (k = 3, manifold.py) need k + 1 samples.
    num_samples: int = Field(2000, ge=NHOOD_K + 1)
    # Local path (or file:// URI) to a TorchScript Inception-v3 feature network, e.g. stylegan2-ada's
    # inception-2015-12-05.pt. Never downloaded at run time; checked against inception_sha256.
    inception_path: str | None = None
    inception_sha256: str | None = None
    # The offline extractor: a small CNN trained on the shards' `cls` labels.
    classifier_steps: int = Field(300, gt=0)
    classifier_width: int = Field(32, gt=0)
    # Share of the real images (by a hash of their key, see memorization.py) held out of the
    # memorization test's training set to calibrate its threshold. Part of the evaluator key.
    heldout_fraction: float = Field(0.1, gt=0.0, le=0.5)
    cache_dir: str = "~/.cache/ganpipe"

    @field_validator("inception_sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not _SHA256.match(v):
            raise ValueError("inception_sha256 must be 64 hex digits (the output of `sha256sum FILE`)")
        return v

    @model_validator(mode="after")
    def _inception_is_pinned(self) -> "EvalSpec":
        # A feature network that is not pinned by hash makes scores incomparable across runs.
        if self.extractor == "inception" and (not self.inception_path or not self.inception_sha256):
            raise ValueError(
                "extractor 'inception' needs inception_path and inception_sha256 "
                "(a local copy of stylegan2-ada's inception-2015-12-05.pt and its sha256)"
            )
        return self


def extractor_key(spec: EvalSpec, manifest_sha256: str) -> str:
    """sha256 hex of the manifest hash plus the fields that change the extracted features.

    num_samples and cache_dir are left out on purpose (they change neither the extractor nor the
    reference), and so is inception_path: the file's hash, not its location, defines the network.
    """
    if spec.extractor == "classifier":
        fields = {"steps": spec.classifier_steps, "width": spec.classifier_width}
    else:
        fields = {"inception_sha256": spec.inception_sha256}
    payload = {
        "manifest_sha256": manifest_sha256,
        "extractor": spec.extractor,
        "version": FEATURES_VERSION,
        **fields,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# Bump when the definition of precision/recall or memorization changes (k, the quantile, the split,
# the views). 2: memorization takes the min over flipped and shifted views, on MEMORIZATION_SAMPLES.
METRICS_VERSION = 2


def evaluator_key(spec: EvalSpec, manifest_sha256: str, num_real: int) -> str:
    """sha256 hex naming everything a score depends on except num_samples and the latent seed.

    `num_real` (real images read, in manifest order) and the held-out rule pin which real images
    serve as reference, held-out and training set, so scores under different splits never mix.
    """
    payload = {
        "extractor_key": extractor_key(spec, manifest_sha256),
        "num_real": num_real,
        "heldout": {"rule": SPLIT_RULE, "fraction": spec.heldout_fraction},
        "nhood_k": NHOOD_K,
        "memorization_quantile": MEMORIZATION_QUANTILE,
        "memorization_views": VIEWS_RULE,
        "memorization_samples": MEMORIZATION_SAMPLES,
        "version": METRICS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
