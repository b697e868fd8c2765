import torch

from pipeline.train.worker import _Window


def test_means_are_per_key_so_lazy_penalties_are_not_diluted():
    w = _Window()
    w.add({"loss/d": torch.tensor(1.0), "reg/r1": torch.tensor(4.0)})  # a step where the lazy penalty ran
    for v in (2.0, 3.0, 6.0):
        w.add({"loss/d": torch.tensor(v)})
    m = w.reduce(lambda t: t, world=1)
    assert m == {"loss/d": 3.0, "reg/r1": 4.0}


def test_ranks_are_averaged():
    w = _Window()
    w.add({"loss/g": 1.0})
    m = w.reduce(lambda t: t + 5.0, world=2)  # the all-reduce adds the other rank's 5.0
    assert m == {"loss/g": 3.0}
