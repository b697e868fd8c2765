"""The training stream leaves out the samples the evaluation holds out (data/split.py), so a generator
can only ever copy the memorization test's training set. Checked against the evaluation's own split:
the keys `read_real_set` reads and `heldout_mask` marks, not a re-derivation of the hash."""

import itertools
import json

from pipeline.data.config import DataSpec
from pipeline.data.split import HeldOut
from pipeline.data.stream import make_batches
from pipeline.eval.memorization import heldout_mask
from pipeline.eval.scorer import MAX_REAL, read_real_set

FRACTION = 0.3  # of 50 samples: about 15 held out, enough to see on 8x8 toy shards


def evaluation_split(root: str, fraction: float = FRACTION) -> tuple[list[str], set[str]]:
    """(every key in manifest order, the held-out keys) as an evaluation of this data sees them."""
    _, _, keys = read_real_set(DataSpec(root=root, resolution=8))
    held = heldout_mask(keys, fraction)
    return keys, {k for k, h in zip(keys, held.tolist()) if h}


def keys_of(stream, batches: int) -> list[str]:
    return [k for _, _, ks in itertools.islice(iter(stream), batches) for k in ks]


def test_resampled_stream_never_yields_a_heldout_sample(tiny_root):
    keys, held = evaluation_split(tiny_root)
    assert 5 <= len(held) <= 25
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=8)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=7, seed=1, with_keys=True,
                          heldout=HeldOut(FRACTION, within=MAX_REAL))
    seen = keys_of(stream, 60)  # 420 draws from 50 samples: every kept one shows up
    assert set(seen) == set(keys) - held
    assert stream.stats()["heldout_skipped"] >= len(held)
    # without the split, the same stream trains on them (the filter is what keeps them out)
    plain = keys_of(make_batches(spec, rank=0, world_size=1, batch_size=7, seed=1, with_keys=True), 60)
    assert set(plain) & held


def test_epoch_stream_fills_heldout_slots_with_training_samples(tiny_root):
    keys, held = evaluation_split(tiny_root)
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=8, sampling="epoch")
    streams = [make_batches(spec, rank=r, world_size=2, batch_size=5, seed=0, with_keys=True,
                            heldout=HeldOut(FRACTION, within=MAX_REAL)) for r in range(2)]
    n = streams[0].batches_per_epoch
    assert n == 5  # 50 // (2 * 5): the same count as without the split, so DDP stays in step
    epoch = [k for s in streams for k in keys_of(s, n)]
    assert len(epoch) == 50 and not set(epoch) & held
    assert set(epoch) == set(keys) - held  # every training sample once, held-out slots repeat others
    assert sum(s.stats()["heldout_skipped"] for s in streams) == len(held)


def test_epoch_resume_with_the_split_is_exact(tiny_root):
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=8, sampling="epoch")
    split = HeldOut(FRACTION, within=MAX_REAL)
    whole = keys_of(make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, with_keys=True, heldout=split), 10)
    before = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, with_keys=True, heldout=split)
    consumed = keys_of(before, 4)
    position = json.loads(json.dumps(before.state()))
    after = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=2, position=position, with_keys=True, heldout=split)
    assert consumed + keys_of(after, 6) == whole


def test_only_samples_within_the_evaluated_prefix_are_held_out(tiny_root):
    # An evaluation reads the first MAX_REAL images in manifest order: past them it holds nothing
    # out, so training keeps those samples (a large data set loses a share of 10k, not of all).
    keys, held = evaluation_split(tiny_root)
    within = 20
    early = {k for k in held if keys.index(k) < within}
    late = held - early
    assert early and late
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=8)
    seen = set(keys_of(make_batches(spec, rank=0, world_size=1, batch_size=7, seed=3, with_keys=True,
                                    heldout=HeldOut(FRACTION, within=within)), 60))
    assert not seen & early and late <= seen


def test_a_job_holds_out_what_its_evaluation_or_gate_holds_out(tmp_path):
    from pipeline.spec import load_job
    from pipeline.train.worker import heldout_split
    from tests.support import REPO

    job = lambda *sets: load_job(REPO / "jobs/quickstart.yaml", [f"data.root={tmp_path}", *sets])  # noqa: E731
    assert heldout_split(job()) == HeldOut(0.1, within=MAX_REAL)  # quickstart evaluates
    assert heldout_split(job("eval.heldout_fraction=0.2")).fraction == 0.2
    assert heldout_split(job("eval=null")) is None  # nothing scores memorization: train on everything
    # the gate scores with the job's eval section or its defaults (tracking/scoring.py)
    assert heldout_split(job("eval=null", "tracking.promote={metric: fd}")) == HeldOut(0.1, within=MAX_REAL)
