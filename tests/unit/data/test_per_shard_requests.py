"""Requests per shard at scale (bench/scale.py): checking 1,000 shards before training, or listing a
brace pattern for `data index`, lists their key range (one request per 1,000 keys) instead of one
HEAD per shard, and verify learns a missing shard from its GET, without a HEAD first."""

from __future__ import annotations

import os
import shutil

import botocore.exceptions
import pytest

from pipeline.data import manifest as manifest_mod
from pipeline.data import s3, store
from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.shard_listing import list_shards
from pipeline.data.stat_many import LIST_FROM, stat_many
from pipeline.data.verify import verify


class CountingS3:
    """Just the calls stat_many and s3.head make, over an in-memory {key: size}, counted."""

    def __init__(self, objects: dict[str, int], page: int = 1000):
        self.objects, self.page = dict(sorted(objects.items())), page
        self.heads = self.pages = self.listed = 0

    def head_object(self, Bucket, Key):
        self.heads += 1
        if Key not in self.objects:
            raise botocore.exceptions.ClientError({"Error": {"Code": "404"}}, "HeadObject")
        return {"ContentLength": self.objects[Key], "ETag": '"etag"'}

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix, StartAfter="", PaginationConfig=None):
        keys = [k for k in self.objects if k.startswith(Prefix) and k > StartAfter]
        page = min(self.page, (PaginationConfig or {}).get("PageSize", self.page))
        for start in range(0, len(keys), page):
            self.pages += 1
            self.listed += len(keys[start : start + page])
            yield {"Contents": [{"Key": k, "Size": self.objects[k], "ETag": '"etag"'} for k in keys[start : start + page]]}


@pytest.fixture
def fake_s3(monkeypatch):
    objects = {f"data/shard-{i:06d}.tar": 2048 for i in range(5000)}
    objects.update({"aaa/first": 1, "data/zz-after": 1})
    fake = CountingS3(objects)
    monkeypatch.setattr(s3, "client", lambda endpoint_url=None: fake)
    return fake


def test_many_shards_are_listed_not_headed(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(1500)]
    infos = stat_many(urls)
    assert [i.size for i in infos] == [2048] * 1500
    # 1,500 keys out of 5,000 listed: 2 pages, then the listing stops past the last wanted key.
    assert (fake_s3.heads, fake_s3.pages) == (0, 2)


def test_listing_starts_at_the_first_wanted_key(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(3000, 3900)]
    assert all(i.size == 2048 for i in stat_many(urls))
    assert (fake_s3.heads, fake_s3.pages) == (0, 1)  # from the prefix "data/shard-00" it would be 4
    assert fake_s3.listed == 900  # pages as long as the wanted keys, not 1,000


def test_a_few_hundred_shards_list_about_that_many_keys(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(300)]
    assert all(i.size == 2048 for i in stat_many(urls))
    assert (fake_s3.pages, fake_s3.listed) == (1, 300)


def test_a_sparse_pattern_never_costs_twice_its_heads(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(0, 5000, 250)]  # 20 keys over 5,000
    assert all(i.size == 2048 for i in stat_many(urls))
    assert fake_s3.heads + fake_s3.pages <= 2 * len(urls)  # listing it all: 250 pages of 20


def test_absent_shards_in_a_listing_are_none(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(4990, 5010)]
    infos = stat_many(urls)
    assert [i is None for i in infos] == [False] * 10 + [True] * 10
    assert fake_s3.heads == 0


def test_a_few_shards_are_headed(fake_s3):
    urls = [f"s3://b/data/shard-{i:06d}.tar" for i in range(LIST_FROM - 2)] + ["s3://b/data/missing.tar"]
    infos = stat_many(urls)
    assert infos[-1] is None and all(i.size == 2048 for i in infos[:-1])
    assert (fake_s3.heads, fake_s3.pages) == (LIST_FROM - 1, 0)


def test_check_shards_over_1000_shards_is_one_listing(fake_s3, monkeypatch):
    shards = [{"name": f"shard-{i:06d}.tar", "samples": 1000, "bytes": 2048, "sha256": "0" * 64} for i in range(1000)]
    shards[7]["bytes"] = 1
    manifest = {"format": 1, "image_size": [3, 8, 8], "num_samples": 10**6, "shards": shards, "total_bytes": 0}
    monkeypatch.setattr(manifest_mod, "load_manifest", lambda root, endpoint_url=None: (manifest, "sha"))
    with pytest.raises(DataError, match="shard-000007.tar is 2048 bytes, the manifest says 1"):
        manifest_mod.check_shards(DataSpec(root="s3://b/data", resolution=8))
    assert (fake_s3.heads, fake_s3.pages) == (0, 1)


def test_index_pattern_is_one_listing(fake_s3):
    listing = list_shards("s3://b/data/shard-{000000..000999}.tar")
    assert len(listing.shards) == 1000 and listing.shards["shard-000999.tar"].version == '"etag"'
    assert (fake_s3.heads, fake_s3.pages) == (0, 1)


def test_verify_asks_no_stat_per_shard(tiny_root, tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    shutil.copytree(tiny_root, root)
    os.remove(os.path.join(root, "shard-000001.tar"))
    calls = []
    real = store.stat
    monkeypatch.setattr(store, "stat", lambda url, endpoint_url=None: calls.append(url) or real(url, endpoint_url))
    report = verify(root)
    assert calls == []
    assert report.problems == [f"shard-000001.tar: missing ({os.path.join(root, 'shard-000001.tar')})"]
