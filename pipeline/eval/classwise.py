"""Class by class: are a conditional generator's samples of class c really of class c, and how close
is each class to its real counterpart?

  accuracy(c)  share of the samples generated for class c that the evaluation classifier assigns to c
               (the "classification accuracy score of samples"; chance is 1/num_classes, and the
               real held-out images' accuracy is the ceiling: pipeline/eval/classifier.py reports it)
  fd(c)        Fréchet distance between the features of class c's samples and of class c's reals
  accuracy     over all samples (the per-class accuracies weighted by how many samples each class got)

The class of each sample is drawn from the real labels' frequencies, so the overall FD compares like
with like. Per-class FD from a few hundred samples in a 128-d space is biased upwards (fewer samples,
larger FD): compare it between runs at equal num_samples, never with the overall FD.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .frechet import feature_stats, frechet_distance

MIN_PER_CLASS = 2  # a covariance needs two samples


def draw_labels(real_labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n class labels drawn (with replacement) from the real labels: the data's class frequencies."""
    return real_labels[torch.randint(len(real_labels), (n,), generator=generator)]


def classwise_scores(*, gen_feats: Tensor, gen_labels: Tensor, real_feats: Tensor, real_labels: Tensor,
                     predicted: Tensor | None, class_names: list[str]) -> dict:
    """{"accuracy": float | None, "per_class": {name: {"fd", "accuracy", "samples"}}}."""
    per_class: dict[str, dict] = {}
    for c, name in enumerate(class_names):
        mine, theirs = gen_labels == c, real_labels == c
        row: dict = {"samples": int(mine.sum()), "fd": None, "accuracy": None}
        if row["samples"] >= MIN_PER_CLASS and int(theirs.sum()) >= MIN_PER_CLASS:
            row["fd"] = frechet_distance(*feature_stats(gen_feats[mine]), *feature_stats(real_feats[theirs]))
        if predicted is not None and row["samples"]:
            row["accuracy"] = float((predicted[mine] == c).float().mean())
        per_class[name] = row
    accuracy = None if predicted is None else float((predicted == gen_labels).float().mean())
    return {"accuracy": accuracy, "per_class": per_class}
