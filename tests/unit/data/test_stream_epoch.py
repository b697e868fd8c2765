"""Epoch mode on a local folder: exactly-once, equal counts, deterministic order, exact resume."""

import itertools
import json

import pytest

from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.stream import make_batches


def epoch_spec(root, **kw):
    return DataSpec(root=root, resolution=8, sampling="epoch", shuffle_buffer=6, **kw)


def keys_of(stream, batches):
    return [k for _, _, ks in itertools.islice(iter(stream), batches) for k in ks]


def test_one_epoch_on_two_ranks_sees_every_kept_sample_once(tiny_root):
    # 50 samples, 2 ranks x batch 5 -> 5 batches per rank, nothing dropped
    spec = epoch_spec(tiny_root)
    streams = [make_batches(spec, rank=r, world_size=2, batch_size=5, seed=0, with_keys=True) for r in range(2)]
    assert [s.batches_per_epoch for s in streams] == [5, 5]
    keys = [k for s in streams for k in keys_of(s, 5)]
    assert sorted(keys) == [f"{i:08d}" for i in range(50)]
    assert all(s.state()["epoch"] == 1 and s.state()["batches_in_epoch"] == 0 for s in streams)


def test_drop_tail_keeps_batches_equal_and_unique(tiny_root):
    spec = epoch_spec(tiny_root, epoch_tail="drop")
    streams = [make_batches(spec, rank=r, world_size=2, batch_size=7, seed=0, with_keys=True) for r in range(2)]
    n = streams[0].batches_per_epoch
    assert n == 3  # 50 // 14
    keys = [k for s in streams for k in keys_of(s, n)]
    assert len(keys) == len(set(keys)) == 42


def test_pad_tail_covers_everything(tiny_root):
    spec = epoch_spec(tiny_root, epoch_tail="pad")
    streams = [make_batches(spec, rank=r, world_size=2, batch_size=7, seed=0, with_keys=True) for r in range(2)]
    n = streams[0].batches_per_epoch
    assert n == 4  # ceil(50 / 14)
    keys = [k for s in streams for k in keys_of(s, n)]
    assert len(keys) == 56 and len(set(keys)) == 50


def test_epochs_differ_and_repeat_for_same_seed(tiny_root):
    spec = epoch_spec(tiny_root)
    a = keys_of(make_batches(spec, rank=0, world_size=1, batch_size=10, seed=5, with_keys=True), 10)
    b = keys_of(make_batches(spec, rank=0, world_size=1, batch_size=10, seed=5, with_keys=True), 10)
    assert a == b
    first, second = a[:50], a[50:]
    assert sorted(first) == sorted(second) and first != second


def test_resume_mid_epoch_consumes_the_rest_exactly(tiny_root):
    spec = epoch_spec(tiny_root)
    before = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, with_keys=True)
    consumed = keys_of(before, 3)
    position = json.loads(json.dumps(before.state()))
    after = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, position=position, with_keys=True)
    rest = keys_of(after, 10 - 3)
    assert sorted(consumed + rest) == [f"{i:08d}" for i in range(50)]
    assert after.state()["epoch"] == 1


def test_stops_early_when_a_batch_cannot_be_filled(tiny_root):
    with pytest.raises(DataError, match="epoch_tail=pad"):
        make_batches(epoch_spec(tiny_root), rank=0, world_size=4, batch_size=16, seed=0)


def test_layout_change_mid_epoch_moves_to_the_next_epoch(tiny_root):
    spec = epoch_spec(tiny_root)
    before = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, with_keys=True)
    keys_of(before, 3)
    after = make_batches(spec, rank=0, world_size=1, batch_size=10, seed=2, position=before.state(), with_keys=True)
    assert after.state()["epoch"] == 1 and after.state()["batches_in_epoch"] == 0
    fresh = make_batches(spec, rank=0, world_size=1, batch_size=10, seed=2, with_keys=True)
    assert keys_of(after, 5) == keys_of(fresh, 10)[50:]  # exactly epoch 1, from its start


def test_position_from_the_other_mode_is_refused(tiny_root):
    resampled = make_batches(DataSpec(root=tiny_root, resolution=8), rank=0, world_size=1, batch_size=5, seed=0)
    with pytest.raises(DataError, match="sampling"):
        make_batches(epoch_spec(tiny_root), rank=0, world_size=1, batch_size=5, seed=0, position=resampled.state())
