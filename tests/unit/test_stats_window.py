import torch

from pipeline.train.dist import MetricsWindow


def test_means_are_per_key_so_lazy_penalties_are_not_diluted():
    w = MetricsWindow()
    w.add({"loss/d": torch.tensor(1.0), "reg/r1": torch.tensor(4.0)})  # a step where the lazy penalty ran
    for v in (2.0, 3.0, 6.0):
        w.add({"loss/d": torch.tensor(v)})
    m = w.reduce(lambda t: t, world=1)
    assert m == {"loss/d": 3.0, "reg/r1": 4.0}


def test_ranks_are_averaged():
    w = MetricsWindow()
    w.add({"loss/g": 1.0})
    m = w.reduce(lambda t: t + 5.0, world=2)  # the all-reduce adds the other rank's 5.0
    assert m == {"loss/g": 3.0}


def test_totals_are_summed_over_ranks_in_the_same_collective():
    w = MetricsWindow()
    w.add({"loss/d": 2.0})
    sent = []
    m = w.reduce(lambda t: sent.append(t) or t * 2, world=2, totals={"samples_seen": 40})  # 2 ranks alike
    assert len(sent) == 1 and m == {"loss/d": 2.0, "samples_seen": 80.0}
