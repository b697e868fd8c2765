import itertools

import torch

from pipeline.data.config import DataSpec
from pipeline.data.manifest import load_manifest
from pipeline.data.stream import make_batches


def take(stream, n):
    return list(itertools.islice(iter(stream), n))


def test_batches_have_fixed_shape_dtype_and_range(tiny_root):
    stream = make_batches(DataSpec(root=tiny_root, resolution=8, shuffle_buffer=8), rank=0, world_size=1, batch_size=7, seed=1)
    batches = take(stream, 20)  # 140 samples from a 50-sample set: the stream does not end
    for images, labels in batches:
        assert images.shape == (7, 3, 8, 8) and images.dtype == torch.float32
        assert labels.shape == (7,) and labels.dtype == torch.int64
        assert images.min() >= -1.0 and images.max() <= 1.0
    assert min(i.min() for i, _ in batches) == -1.0 and max(i.max() for i, _ in batches) == 1.0
    assert stream.stats()["samples"] == 140 and stream.stats()["corrupt_skipped"] == 0


def test_labels_match_packed_keys(tiny_root, tiny_npz):
    import numpy as np

    src = np.load(tiny_npz)
    stream = make_batches(DataSpec(root=tiny_root, resolution=8), rank=0, world_size=1, batch_size=5, seed=0, with_keys=True)
    images, labels, keys = next(iter(stream))
    for image, label, key in zip(images, labels, keys):
        assert label == src["labels"][int(key)]
        pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        assert np.array_equal(pixels, src["images"][int(key)])


def test_same_seed_same_stream_other_rank_other_stream(tiny_root):
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=10)
    keys = lambda rank, seed: [k for _, _, ks in take(make_batches(spec, rank=rank, world_size=2, batch_size=4, seed=seed, with_keys=True), 6) for k in ks]  # noqa: E731
    assert keys(0, 3) == keys(0, 3)
    assert keys(0, 3) != keys(1, 3)
    assert keys(0, 3) != keys(0, 4)


def test_resume_does_not_replay_and_keeps_counting(tiny_root):
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=10)
    first = make_batches(spec, rank=0, world_size=1, batch_size=4, seed=0, with_keys=True)
    seen = [ks for _, _, ks in take(first, 5)]
    position = first.state()
    import json

    position = json.loads(json.dumps(position))  # what a checkpoint stores
    resumed = make_batches(spec, rank=0, world_size=1, batch_size=4, seed=0, position=position, with_keys=True)
    after = [ks for _, _, ks in take(resumed, 5)]
    assert after != seen  # a fresh draw, not the same five batches again
    assert resumed.stats()["batches"] == 10 and resumed.stats()["resumes"] == 1


def test_every_shard_gets_drawn(tiny_root):
    manifest, _ = load_manifest(tiny_root)
    stream = make_batches(DataSpec(root=tiny_root, resolution=8, shuffle_buffer=0), rank=0, world_size=1, batch_size=10, seed=0, with_keys=True)
    keys = {k for _, _, ks in take(stream, 40) for k in ks}
    assert len(keys) == manifest["num_samples"]


def test_loader_workers_draw_different_streams(tiny_root):
    spec = DataSpec(root=tiny_root, resolution=8, shuffle_buffer=10, loader_workers=2)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=16, seed=0, with_keys=True)
    batches = [ks for _, _, ks in take(stream, 4)]  # round-robin: worker 0, 1, 0, 1
    assert batches[0] != batches[1] and batches[2] != batches[3]
    assert stream.stats()["batches"] == 4


def test_resolution_mismatch_is_refused_before_streaming(tiny_root):
    import pytest

    from pipeline.data.errors import DataError

    with pytest.raises(DataError, match="resolution 16"):
        make_batches(DataSpec(root=tiny_root, resolution=16), rank=0, world_size=1, batch_size=4, seed=0)
