"""Evaluation: FD, KID, precision/recall and memorization of generated vs real images in a pinned
feature space.

    evaluate(G, z_dim, real_images, real_labels, spec, manifest_sha256, real_keys=...)
        -> {"fd", "kid", "precision", "recall", "memorization", ...}

config (EvalSpec, cache and evaluator keys) → extractors (classifier | inception) → reference (cached
real stats) → frechet, manifold, memorization (the maths). Each module has one job; evaluate.py ties
them together.
"""

from .classifier import FeatureCNN, features, train_classifier
from .config import EvalSpec, evaluator_key, extractor_key
from .evaluate import evaluate
from .extractors import Extractor, InceptionWeightsMismatch, InceptionWeightsMissing, load_extractor
from .frechet import feature_stats, frechet_distance, kernel_inception_distance
from .manifold import knn_radii, precision_recall
from .memorization import heldout_mask, is_heldout, memorization_share
from .reference import reference_stats

__all__ = [
    "EvalSpec", "extractor_key", "evaluator_key", "precision_recall", "knn_radii",
    "is_heldout", "heldout_mask", "memorization_share", "evaluate", "load_extractor", "Extractor",
    "InceptionWeightsMissing", "InceptionWeightsMismatch", "reference_stats",
    "frechet_distance", "feature_stats", "kernel_inception_distance",
    "FeatureCNN", "train_classifier", "features",
]
