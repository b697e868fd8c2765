import os
import shutil

import pytest

from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.manifest import check_shards, load_manifest, shard_urls


@pytest.fixture
def copy_root(tmp_path, tiny_root):
    dest = tmp_path / "data"
    shutil.copytree(tiny_root, dest)
    return str(dest)


def test_shard_urls_default_to_every_shard(tiny_root):
    manifest, _ = load_manifest(tiny_root)
    urls = shard_urls(DataSpec(root=tiny_root, resolution=8), manifest)
    assert urls == [os.path.join(tiny_root, f"shard-{i:06d}.tar") for i in range(4)]


def test_brace_pattern_selects_shards(tiny_root):
    manifest, _ = load_manifest(tiny_root)
    spec = DataSpec(root=tiny_root, resolution=8, shards="shard-{000001..000002}.tar")
    assert [os.path.basename(u) for u in shard_urls(spec, manifest)] == ["shard-000001.tar", "shard-000002.tar"]
    with pytest.raises(DataError, match="shard-000009.tar"):
        shard_urls(DataSpec(root=tiny_root, resolution=8, shards="shard-{000003..000009}.tar"), manifest)


def test_check_shards_lists_every_problem(copy_root):
    os.remove(os.path.join(copy_root, "shard-000001.tar"))
    with open(os.path.join(copy_root, "shard-000002.tar"), "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(DataError) as info:
        check_shards(DataSpec(root=copy_root, resolution=16))
    message = str(info.value)
    assert "missing shard" in message and "shard-000001.tar" in message
    assert "size mismatch" in message and "shard-000002.tar" in message
    assert "resolution" in message and "8x8" in message
    assert isinstance(info.value, ValueError)


def test_check_shards_passes_on_intact_data(tiny_root):
    assert check_shards(DataSpec(root=tiny_root, resolution=8))["num_samples"] == 50


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no manifest.json"):
        load_manifest(str(tmp_path))
