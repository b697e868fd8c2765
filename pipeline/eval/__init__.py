"""Evaluation: Fréchet distance and KID of generated vs real images in a pinned feature space.

    evaluate(G, z_dim, real_images, real_labels, spec, manifest_sha256) -> {"fd", "kid", ...}

config (EvalSpec, cache key) → extractors (classifier | inception) → reference (cached real stats)
→ frechet (the maths). Each module has one job; evaluate.py ties them together.
"""

from .classifier import FeatureCNN, features, train_classifier
from .config import EvalSpec, extractor_key
from .evaluate import evaluate
from .extractors import Extractor, InceptionWeightsMismatch, InceptionWeightsMissing, load_extractor
from .frechet import feature_stats, frechet_distance, kernel_inception_distance
from .reference import reference_stats

__all__ = [
    "EvalSpec", "extractor_key", "evaluate", "load_extractor", "Extractor",
    "InceptionWeightsMissing", "InceptionWeightsMismatch", "reference_stats",
    "frechet_distance", "feature_stats", "kernel_inception_distance",
    "FeatureCNN", "train_classifier", "features",
]
