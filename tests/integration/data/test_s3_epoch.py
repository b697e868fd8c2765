"""Epoch mode streamed from the S3 endpoint with 2 ranks x 2 loader workers: exactly once per
epoch, deterministic per (seed, epoch), and an exact resume after a crash mid-epoch."""

import itertools
import json

import pytest

from pipeline.data.config import DataSpec
from pipeline.data.pack import pack
from pipeline.data.stream import make_batches

WORLD, BATCH = 2, 5  # 100 samples -> 10 batches per rank per epoch, 5 per loader worker


@pytest.fixture
def s3_root(s3_endpoint, bucket, small_npz):
    url = f"s3://{bucket}/epoch"
    manifest = pack(small_npz, url, shard_size=30, resolution=8, endpoint_url=s3_endpoint, progress=False)
    return url, sorted(f"{i:08d}" for i in range(manifest["num_samples"]))


def spec_for(url, endpoint, **kw):
    return DataSpec(root=url, endpoint_url=endpoint, resolution=8, sampling="epoch", shuffle_buffer=8, loader_workers=2, **kw)


def rank_keys(spec, rank, batches, seed=0, position=None, mp_context=None):
    stream = make_batches(spec, rank=rank, world_size=WORLD, batch_size=BATCH, seed=seed, position=position, with_keys=True, mp_context=mp_context)
    keys = [list(ks) for _, _, ks in itertools.islice(iter(stream), batches)]
    return keys, stream


def test_two_ranks_two_workers_cover_the_epoch_once(s3_endpoint, s3_root):
    url, all_keys = s3_root
    spec = spec_for(url, s3_endpoint)
    per_rank = [rank_keys(spec, r, 20)[0] for r in range(WORLD)]  # two epochs
    assert all(len(b) == 20 and all(len(x) == BATCH for x in b) for b in per_rank)
    epoch0 = [k for r in per_rank for batch in r[:10] for k in batch]
    epoch1 = [k for r in per_rank for batch in r[10:] for k in batch]
    assert sorted(epoch0) == all_keys  # union is the manifest's keys, no duplicates
    assert sorted(epoch1) == all_keys
    assert epoch0 != epoch1  # a new order every epoch
    again = [k for r in range(WORLD) for batch in rank_keys(spec, r, 10)[0] for k in batch]
    assert again == epoch0  # same (seed, epoch), same order
    other_seed = [k for r in range(WORLD) for batch in rank_keys(spec, r, 10, seed=1)[0] for k in batch]
    assert other_seed != epoch0


@pytest.mark.parametrize("crash_after", [3, 6])
def test_resume_mid_epoch_consumes_the_rest_exactly_once(s3_endpoint, s3_root, crash_after):
    url, all_keys = s3_root
    spec = spec_for(url, s3_endpoint)
    consumed, positions = [], []
    for r in range(WORLD):
        keys, stream = rank_keys(spec, r, crash_after)
        consumed += [k for b in keys for k in b]
        positions.append(stream.state())
    # Only rank 0 checkpoints; every rank resumes from that one position.
    saved = json.loads(json.dumps(positions[0]))
    assert positions[0] == positions[1]
    for r in range(WORLD):
        # a second crash one batch later (an odd count, so the next batch is due from the other
        # loader worker than a fresh DataLoader would ask first), then the rest of the epoch
        keys, stream = rank_keys(spec, r, 1, position=saved)
        consumed += [k for b in keys for k in b]
        keys, stream = rank_keys(spec, r, 10 - crash_after - 1, position=json.loads(json.dumps(stream.state())))
        consumed += [k for b in keys for k in b]
        assert stream.state()["epoch"] == 1 and stream.state()["batches_in_epoch"] == 0
    assert sorted(consumed) == all_keys


def test_spawned_loader_workers_read_s3(s3_endpoint, s3_root):
    # spawn re-imports everything in the workers: the s3:// handler must register on import and
    # the boto3 client must be built in the worker, not inherited.
    # One rank only: a spawned worker pays a full interpreter start and torch import.
    url, _ = s3_root
    spec = spec_for(url, s3_endpoint)
    assert rank_keys(spec, 1, 10, mp_context="spawn")[0] == rank_keys(spec, 1, 10, mp_context="fork")[0]
