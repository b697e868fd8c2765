"""The epoch arithmetic on its own: counts, ownership, round-robin delivery."""

import itertools

import pytest

from pipeline.data import epoch_plan as plan


def positions(segments, counts, seed, epoch):
    """Expand segments into (shard, file index) pairs."""
    out = []
    for seg in segments:
        order = plan.window_permutation(counts[seg.shard], 4, seed, epoch, seg.shard)
        out += [(seg.shard, int(i)) for i in order[seg.start : seg.stop]]
    return out


@pytest.mark.parametrize("world,workers,batch", [(1, 1, 5), (2, 2, 5), (3, 2, 4), (2, 3, 7)])
def test_drop_mode_covers_each_sample_at_most_once_and_equal_counts(world, workers, batch):
    counts = [30, 30, 30, 10]
    layout = plan.Layout(world, workers, batch, "drop")
    n = plan.batches_per_rank(sum(counts), layout)
    seen = []
    for rank in range(world):
        rank_samples = 0
        for w in range(workers):
            begin, end = plan.worker_range(sum(counts), layout, rank, w)
            seen += positions(plan.segments(counts, 0, 1, begin, end), counts, 0, 1)
            rank_samples += end - begin
        assert rank_samples == n * batch  # every rank the same number of full batches
    assert len(seen) == len(set(seen)) == world * n * batch
    assert sum(counts) - len(seen) < world * batch  # only the tail is dropped


def test_pad_mode_covers_every_sample_and_repeats_only_the_pad():
    counts = [30, 30, 30, 10]
    layout = plan.Layout(2, 2, 7, "pad")
    n = plan.batches_per_rank(100, layout)
    assert n == 8  # ceil(100 / 14)
    seen = []
    for rank, w in itertools.product(range(2), range(2)):
        begin, end = plan.worker_range(100, layout, rank, w)
        seen += positions(plan.segments(counts, 0, 0, begin, end), counts, 0, 0)
    assert len(seen) == 2 * 8 * 7 and len(set(seen)) == 100


def test_order_depends_on_seed_and_epoch_only():
    counts = [30, 30, 30, 10]
    epoch = lambda seed, e: positions(plan.segments(counts, seed, e, 0, 100), counts, seed, e)  # noqa: E731
    assert epoch(0, 3) == epoch(0, 3)
    assert epoch(0, 3) != epoch(0, 4)
    assert epoch(0, 3) != epoch(1, 3)
    assert sorted(epoch(0, 3)) == sorted(epoch(0, 4))


def test_round_robin_delivery_counts():
    # 7 batches over 3 workers: runs of 3, 2, 2; rank batch j comes from worker j % 3.
    assert plan.worker_batches(7, 3) == [(0, 3), (3, 2), (5, 2)]
    for k in range(8):
        delivered = [plan.delivered(k, w, 3) for w in range(3)]
        assert sum(delivered) == k
        assert delivered == [sum(1 for j in range(k) if j % 3 == w) for w in range(3)]


def test_window_permutation_stays_inside_windows():
    order = plan.window_permutation(10, 4, seed=0, epoch=0, shard=0)
    assert sorted(order) == list(range(10))
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[8:]) == [8, 9]
    assert list(plan.window_permutation(10, 0, 0, 0, 0)) == list(range(10))
