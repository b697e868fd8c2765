"""`data index` over shards webdataset's ShardWriter wrote in a local folder: manifest, resume,
clear errors; then verify, training batches and eval reads through the indexed manifest."""

import hashlib
import itertools
import json
import os
import shutil

import pytest

from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.index import index
from pipeline.data.index_state import STATE_DIR
from pipeline.data.manifest import check_shards, load_manifest
from pipeline.data.stream import make_batches
from pipeline.data.verify import verify
from tests.unit.data.foreign_shards import write_foreign_shards


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """26 JPEG samples (sides 40..120, non-square) in shards of 8, 8, 8, 2; img000005 truncated."""
    folder = str(tmp_path_factory.mktemp("foreign") / "shards")
    return folder, write_foreign_shards(folder, 26, 8, corrupt=5)


@pytest.fixture
def indexed_copy(foreign, tmp_path):
    folder, written = foreign
    copy = str(tmp_path / "shards")
    shutil.copytree(folder, copy)
    index(copy, label_key="json.label")
    return copy, written


def test_index_writes_the_manifest_training_needs(foreign, tmp_path):
    folder, written = foreign
    copy = str(tmp_path / "shards")
    shutil.copytree(folder, copy)
    report = index(copy, label_key="json.label")
    manifest, snapshot = load_manifest(copy)
    assert report.snapshot == snapshot and report.read == 4 and report.reused == 0
    assert (manifest["kind"], manifest["image_size"], manifest["image_key"], manifest["label_key"]) == ("indexed", None, "jpg", "json.label")
    assert manifest["num_samples"] == 26 and [s["samples"] for s in manifest["shards"]] == [8, 8, 8, 2]
    assert manifest["members"] == {"jpg": 26, "json": 26, "txt": 26}
    for entry in manifest["shards"]:
        with open(os.path.join(copy, entry["name"]), "rb") as f:
            data = f.read()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    widths = [w for w, _ in written["sizes"].values()]
    heights = [h for _, h in written["sizes"].values()]
    shorter = [min(s) for s in written["sizes"].values()]
    assert manifest["image_sizes"]["width"] == [min(widths), max(widths)]
    assert manifest["image_sizes"]["height"] == [min(heights), max(heights)]
    assert manifest["image_sizes"]["shorter_side"] == [min(shorter), max(shorter)]
    assert manifest["labels"] == {"labelled": 26, "values": [0, 1, 2, 3]}
    assert "shards_root" not in manifest  # next to its shards: the folder can move as a whole
    # indexing again changes nothing: same snapshot id
    assert index(copy, label_key="json.label").snapshot == snapshot


def test_manifest_elsewhere_points_at_the_shards(foreign, tmp_path):
    folder, _ = foreign
    out = str(tmp_path / "elsewhere")
    index(os.path.join(folder, "shard-{000000..000002}.tar"), out=out)
    manifest, _ = load_manifest(out)
    assert manifest["shards_root"] == folder and manifest["num_samples"] == 24
    assert manifest["label_key"] is None  # auto: no cls member, and json needs naming
    spec = DataSpec(root=out, resolution=16, sampling="epoch", shuffle_buffer=0, on_corrupt="skip", max_corrupt_fraction=0.1)
    assert check_shards(spec)["num_samples"] == 24
    images, labels = next(iter(make_batches(spec, rank=0, world_size=1, batch_size=4, seed=0)))
    assert images.shape == (4, 3, 16, 16) and (labels == -1).all()


def test_an_interrupted_index_continues_elsewhere_and_reads_only_the_rest(foreign, tmp_path):
    folder, _ = foreign
    here, there = str(tmp_path / "here"), str(tmp_path / "there")
    shutil.copytree(folder, here)
    seen = []

    def stop_after_two(name, reused):
        seen.append(name)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index(here, parallel=1, on_shard=stop_after_two)
    assert not os.path.exists(os.path.join(here, "manifest.json"))
    assert os.listdir(os.path.join(here, STATE_DIR))  # the state lies beside the output, not in a local cache
    # "Another machine": the output folder copied whole (copytree keeps mtimes, the local version).
    shutil.copytree(here, there)
    report = index(there, parallel=1)
    assert (report.reused, report.read) == (2, 2)
    assert not os.path.exists(os.path.join(there, STATE_DIR))  # gone once the manifest is written
    # a shard that changed since it was indexed is read again
    with open(os.path.join(here, seen[0]), "ab") as f:
        f.write(b"\0" * 1024)
    report = index(here, parallel=1)
    assert (report.reused, report.read) == (1, 3)
    assert index(here, parallel=1).read == 4  # the state went when the manifest came: a new index reads all


def test_a_missing_shard_of_a_pattern_is_named(foreign):
    folder, _ = foreign
    with pytest.raises(DataError, match=r"1 of the 5 shards named by .* do not exist:\n  .*shard-000004.tar"):
        index(os.path.join(folder, "shard-{000000..000004}.tar"))


def test_an_unreadable_shard_is_named_and_no_manifest_written(foreign, tmp_path):
    folder, _ = foreign
    copy = str(tmp_path / "shards")
    shutil.copytree(folder, copy)
    with open(os.path.join(copy, "shard-000001.tar"), "r+b") as f:
        f.seek(600)
        f.write(b"garbage!" * 64)  # the second member's header checksum no longer matches
    with pytest.raises(DataError, match=r"1 shard\(s\) could not be read.*\n  .*shard-000001.tar: ShardFormatError"):
        index(copy)
    assert not os.path.exists(os.path.join(copy, "manifest.json"))


def test_a_label_key_no_sample_has_is_an_error(foreign, tmp_path):
    folder, _ = foreign
    with pytest.raises(DataError, match="--label-key json.class: no sample"):
        index(folder, out=str(tmp_path / "out"), label_key="json.class")
    with pytest.raises(DataError, match="--label-key must be"):
        index(folder, out=str(tmp_path / "out"), label_key="caption")


def test_verify_names_the_corrupt_jpeg_or_counts_it(indexed_copy):
    root, written = indexed_copy
    failed = verify(root)
    assert not failed.ok and len(failed.problems) == 1 and written["corrupt"] in failed.problems[0]
    skipped = verify(root, on_corrupt="skip", max_corrupt_fraction=0.05)
    assert skipped.ok and len(skipped.skipped) == 1 and written["corrupt"] in skipped.skipped[0]
    assert skipped.samples == 26
    assert not verify(root, on_corrupt="skip", max_corrupt_fraction=0.01).ok  # budget 0 of 26


def test_epoch_batches_cover_indexed_shards_once_with_labels(indexed_copy):
    root, written = indexed_copy
    spec = DataSpec(root=root, resolution=32, sampling="epoch", shuffle_buffer=4, on_corrupt="skip",
                    max_corrupt_fraction=0.1, transform={"crop": "random", "hflip": True})
    streams = [make_batches(spec, rank=r, world_size=2, batch_size=4, seed=0, with_keys=True) for r in range(2)]
    keys, labels = [], {}
    for s in streams:
        for images, ls, ks in itertools.islice(iter(s), 3):  # 26 // (2*4) = 3 batches per rank
            assert images.shape == (4, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
            keys += ks
            labels.update(zip(ks, ls.tolist()))
    good = set(written["keys"]) - {written["corrupt"]}
    assert set(keys) <= set(written["keys"]) and len(set(keys)) >= 24 - 1
    assert all(labels[k] == written["labels"][k] for k in keys)  # json.label came through
    assert sum(s.stats()["corrupt_skipped"] for s in streams) <= 1 and set(keys) <= good


def test_spec_keys_are_checked_against_the_shards_before_training(indexed_copy):
    root, _ = indexed_copy
    with pytest.raises(DataError, match="image_key: 'png' is not a member"):
        check_shards(DataSpec(root=root, image_key="png"))
    with pytest.raises(DataError, match="label_key: 'cls' needs a cls member"):
        make_batches(DataSpec(root=root, label_key="cls"), rank=0, world_size=1, batch_size=2, seed=0)


def test_eval_reads_indexed_shards_through_the_same_decoder(indexed_copy):
    from pipeline.eval.scorer import read_real_images

    root, written = indexed_copy
    images, labels = read_real_images(DataSpec(root=root, resolution=16, on_corrupt="skip", max_corrupt_fraction=0.1))
    assert images.shape == (25, 3, 16, 16)
    assert sorted(labels.tolist()) == sorted(v for k, v in written["labels"].items() if k != written["corrupt"])
    again, _ = read_real_images(DataSpec(root=root, resolution=16, on_corrupt="skip", max_corrupt_fraction=0.1,
                                         transform={"crop": "random", "hflip": True}))
    assert (again == images).all()  # reference images: centre crop, no flip, whatever the job trains with
