"""Evaluation: FD, KID, precision/recall and memorization of generated vs real images in a pinned
feature space.

    evaluate(G, z_dim, real_images, real_labels, spec, manifest_sha256, real_keys=...)
        -> {"fd", "kid", "precision", "recall", "memorization", ...}

config (EvalSpec, cache and evaluator keys) → extractors (classifier | inception) → reference (cached
real stats) → frechet, manifold, memorization (the maths). Each module has one job; evaluate.py ties
them together.
"""

import importlib

# Where each name lives. Imported on first use (PEP 562), not here: the job spec imports
# pipeline.eval.config, and importing this package must not import torch with it (rules.py says why).
_WHERE = {
    "FeatureCNN": "classifier", "features": "classifier", "train_classifier": "classifier",
    "EvalSpec": "config", "evaluator_key": "config", "extractor_key": "config",
    "evaluate": "evaluate",
    "Extractor": "extractors", "InceptionWeightsMismatch": "extractors", "InceptionWeightsMissing": "extractors",
    "load_extractor": "extractors",
    "feature_stats": "frechet", "frechet_distance": "frechet", "kernel_inception_distance": "frechet",
    "knn_radii": "manifold", "precision_recall": "manifold",
    "heldout_mask": "memorization", "is_heldout": "memorization", "memorization_share": "memorization",
    "reference_stats": "reference",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EvalSpec", "extractor_key", "evaluator_key", "precision_recall", "knn_radii",
    "is_heldout", "heldout_mask", "memorization_share", "evaluate", "load_extractor", "Extractor",
    "InceptionWeightsMissing", "InceptionWeightsMismatch", "reference_stats",
    "frechet_distance", "feature_stats", "kernel_inception_distance",
    "FeatureCNN", "train_classifier", "features",
]
