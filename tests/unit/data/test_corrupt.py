"""A corrupt image inside a shard: `fail` stops naming shard and key, `skip` counts it."""

import hashlib
import itertools
import json
import shutil
import tarfile

import pytest
import webdataset as wds

from pipeline.data.config import DataSpec
from pipeline.data.errors import CorruptSampleError, DataError
from pipeline.data.pack import TAR_MTIME
from pipeline.data.stream import make_batches
from pipeline.data.verify import verify

SHARD = "shard-000001.tar"


@pytest.fixture
def corrupt_root(tmp_path, tiny_root):
    """The tiny set with one PNG in shard 1 replaced by garbage; the manifest is updated to match
    so that the size checks pass and only decoding can notice."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    path = root / SHARD
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    samples = {}
    for name, data in members:
        key, ext = name.split(".", 1)
        samples.setdefault(key, {"__key__": key})[ext] = data
    bad_key = sorted(samples)[3]
    samples[bad_key]["png"] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20
    with open(path, "wb") as f, wds.TarWriter(f, mtime=TAR_MTIME) as writer:
        for key, _ in itertools.groupby(name.split(".")[0] for name, _ in members):
            writer.write(samples[key])
    manifest = json.loads((root / "manifest.json").read_text())
    data = path.read_bytes()
    for entry in manifest["shards"]:
        if entry["name"] == SHARD:
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root), bad_key


def everything(stream, batches):
    return [k for _, _, ks in itertools.islice(iter(stream), batches) for k in ks]


@pytest.mark.parametrize("sampling", ["epoch", "resampled"])
def test_fail_names_shard_and_key(corrupt_root, sampling):
    root, bad_key = corrupt_root
    stream = make_batches(DataSpec(root=root, resolution=8, sampling=sampling), rank=0, world_size=1, batch_size=5, seed=0)
    with pytest.raises(CorruptSampleError) as info:
        list(itertools.islice(iter(stream), 40))
    assert bad_key in str(info.value) and SHARD in str(info.value)


def test_skip_counts_and_keeps_batches_full_in_epoch_mode(corrupt_root):
    root, bad_key = corrupt_root
    spec = DataSpec(root=root, resolution=8, sampling="epoch", on_corrupt="skip", max_corrupt_fraction=0.05)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True)
    keys = everything(stream, 10)
    assert len(keys) == 50  # still 10 full batches: a short epoch on one rank would hang DDP
    assert bad_key not in keys and len(set(keys)) == 49  # replaced by a repeat from its own batch
    assert stream.stats()["corrupt_skipped"] == 1


def test_skip_in_resampled_mode_drops_the_sample(corrupt_root):
    root, bad_key = corrupt_root
    spec = DataSpec(root=root, resolution=8, on_corrupt="skip", max_corrupt_fraction=0.05, shuffle_buffer=0)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True)
    keys = everything(stream, 40)
    assert bad_key not in keys
    assert stream.stats()["corrupt_skipped"] >= 1


def test_skip_budget_exceeded_fails(corrupt_root):
    root, _ = corrupt_root
    spec = DataSpec(root=root, resolution=8, sampling="epoch", on_corrupt="skip", max_corrupt_fraction=0.01)  # 0 of 50
    with pytest.raises(DataError, match="exceed max_corrupt_fraction"):
        everything(make_batches(spec, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True), 10)


def test_fail_crosses_the_loader_worker_boundary(corrupt_root):
    root, bad_key = corrupt_root
    spec = DataSpec(root=root, resolution=8, sampling="epoch", loader_workers=2)
    with pytest.raises(CorruptSampleError, match=bad_key):
        everything(make_batches(spec, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True), 10)


def test_verify_lists_the_corrupt_key(corrupt_root):
    root, bad_key = corrupt_root
    report = verify(root)
    assert not report.ok
    assert len(report.problems) == 1 and bad_key in report.problems[0] and SHARD in report.problems[0]
    assert report.samples == 50


@pytest.fixture
def truncated_root(tmp_path, tiny_root):
    """shard 1 (16 samples) cut after its 8th sample's header: a damaged tar, not a storage error."""
    root = tmp_path / "cut"
    shutil.copytree(tiny_root, root)
    data = (root / SHARD).read_bytes()
    (root / SHARD).write_bytes(data[: 8 * 2 * 1024 + 512 + 100])  # 8 samples of 2 members x 1 KiB, then half a member
    return str(root)


def test_truncated_shard_fails_or_counts_its_missing_samples(truncated_root):
    fail = DataSpec(root=truncated_root, resolution=8, sampling="epoch")
    with pytest.raises(DataError, match=f"{SHARD}.*truncated"):
        everything(make_batches(fail, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True), 10)
    skip = DataSpec(root=truncated_root, resolution=8, sampling="epoch", on_corrupt="skip", max_corrupt_fraction=0.2)
    stream = make_batches(skip, rank=0, world_size=1, batch_size=5, seed=0, with_keys=True)
    keys = everything(stream, 10)
    assert len(keys) == 50 and stream.stats()["corrupt_skipped"] == 8  # 16 in the manifest, 8 readable


def test_evaluation_reader_follows_the_same_policy(corrupt_root):
    """FD's real images are read with the training stream's corrupt-sample policy and budget."""
    from pipeline.eval.scorer import read_real_images

    root, bad_key = corrupt_root
    with pytest.raises(CorruptSampleError, match=bad_key):
        read_real_images(DataSpec(root=root, resolution=8, on_corrupt="fail"))
    with pytest.raises(DataError, match="exceed max_corrupt_fraction"):
        read_real_images(DataSpec(root=root, resolution=8, on_corrupt="skip", max_corrupt_fraction=0.01))
    images, labels = read_real_images(DataSpec(root=root, resolution=8, on_corrupt="skip", max_corrupt_fraction=0.1))
    assert images.shape == (49, 3, 8, 8) and len(labels) == 49  # 50 samples, the corrupt one skipped
