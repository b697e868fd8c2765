"""Class-by-class scores: sample accuracy counts agreement between the asked-for class and the
classifier's, per class and overall; per-class FD compares each class with its own reals."""
import pytest
import torch

from pipeline.eval.classwise import classwise_scores, draw_labels


def test_accuracy_and_per_class_fd():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    real_labels = torch.arange(3).repeat_interleave(200)
    real = centres[real_labels] + torch.randn(600, 2)
    gen_labels = torch.tensor([0, 1, 2]).repeat_interleave(100)
    # Class 2's samples land on class 1's cluster: a generator that gets class 2 wrong.
    wrong = torch.where(gen_labels == 2, torch.tensor(1), gen_labels)
    gen = centres[wrong] + torch.randn(300, 2)
    predicted = wrong.clone()  # a perfect classifier of the clusters
    out = classwise_scores(gen_feats=gen, gen_labels=gen_labels, real_feats=real, real_labels=real_labels,
                           predicted=predicted, class_names=["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(2 / 3)
    rows = out["per_class"]
    assert rows["a"]["accuracy"] == 1.0 and rows["b"]["accuracy"] == 1.0 and rows["c"]["accuracy"] == 0.0
    assert rows["a"]["fd"] < 1 and rows["b"]["fd"] < 1 and rows["c"]["fd"] > 150  # ≈ ‖(10,-10)‖² = 200
    assert rows["c"]["samples"] == 100


def test_without_a_class_head_there_is_no_accuracy():
    feats = torch.randn(40, 2)
    labels = torch.arange(2).repeat(20)
    out = classwise_scores(gen_feats=feats, gen_labels=labels, real_feats=feats, real_labels=labels, predicted=None,
                           class_names=["a", "b"])
    assert out["accuracy"] is None and out["per_class"]["a"]["accuracy"] is None and out["per_class"]["a"]["fd"] is not None


def test_labels_follow_the_real_class_frequencies():
    real = torch.tensor([0] * 900 + [1] * 100)
    drawn = draw_labels(real, 5000, torch.Generator().manual_seed(0))
    assert 0.08 < (drawn == 1).float().mean() < 0.12
