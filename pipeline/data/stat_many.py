"""Size and version of many objects at once: one S3 LIST page per 1,000 keys instead of a HEAD each.

check_shards (before every training run) and `data index` over a brace pattern ask this of every
shard. At 1,000 shards, HEADs cost 1,000 round trips (and 1,000 billed requests); listing the key
range they fall in costs one. Listing pays only when the wanted keys are a fair share of the range
listed, so a handful of keys (a test, a pattern naming 3 shards of a bucket holding millions) is
still HEADed, and the listing covers only the range from the first wanted key to the last.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from pipeline.data import store
from pipeline.data.object_info import ObjectInfo

# Below this many keys in one bucket, HEADs in parallel are as quick as a listing and never read
# keys nobody asked for.
LIST_FROM = 16
HEAD_THREADS = 8


def stat_many(urls: list[str], endpoint_url: str | None = None) -> list[ObjectInfo | None]:
    """store.stat of every URL, in order (None where absent). Local paths are stat()ed; S3 URLs of
    one bucket are listed together when there are LIST_FROM or more, else HEADed a few at a time."""
    found: dict[str, ObjectInfo | None] = {}
    by_bucket: dict[str, list[str]] = defaultdict(list)
    for url in urls:
        if store.is_s3(url):
            by_bucket[url[len("s3://"):].partition("/")[0]].append(url)
        else:
            found[url] = store.stat(url)
    for bucket, group in by_bucket.items():
        found.update(_listed(bucket, group, endpoint_url) if len(group) >= LIST_FROM else _headed(group, endpoint_url))
    return [found[url] for url in urls]


def _headed(urls: list[str], endpoint_url: str | None) -> dict[str, ObjectInfo | None]:
    with ThreadPoolExecutor(max_workers=HEAD_THREADS) as pool:
        return dict(zip(urls, pool.map(lambda u: store.stat(u, endpoint_url=endpoint_url), urls)))


def _listed(bucket: str, urls: list[str], endpoint_url: str | None) -> dict[str, ObjectInfo | None]:
    """One paginated listing of the wanted keys' range. A sparse range (a pattern naming every
    1,000th shard) would list far more keys than it wants: once the pages listed reach the wanted
    keys still ahead, those are HEADed instead, so the requests stay under twice the HEADs'."""
    import botocore.exceptions  # here, as store.py imports s3: local-only use never loads boto

    from pipeline.data import s3

    keys = {url[len("s3://") + len(bucket) + 1:]: url for url in urls}
    prefix, first = os.path.commonprefix(list(keys)), min(keys)
    out: dict[str, ObjectInfo | None] = dict.fromkeys(urls)
    # Start just before the smallest wanted key (StartAfter is exclusive: the key with its last
    # character one lower sorts before it), so shards 900-999 of 1,000 list 100 keys, not 1,000.
    start = {"StartAfter": first[:-1] + chr(ord(first[-1]) - 1)} if first and ord(first[-1]) > 0 else {}
    # Pages no longer than the wanted keys: 300 contiguous shards list 300 keys, not a page of 1,000.
    paging = {"PageSize": min(1000, len(keys))}
    pages = s3.client(endpoint_url).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig=paging, **start
    )
    wanted, passed = sorted(keys), 0  # wanted[passed:]: the keys the listing has not reached yet
    try:
        for listed, page in enumerate(pages, start=1):
            contents = page.get("Contents", [])
            for item in contents:
                if item["Key"] in keys:
                    out[keys[item["Key"]]] = ObjectInfo(size=int(item["Size"]), sha256=None, version=item.get("ETag"))
            if not contents:
                break
            # S3 lists in UTF-8 byte order, which is code point order: python's str order.
            # An index, not a slice: slicing per page would copy the wanted list 1,000 times for a million.
            passed = bisect.bisect_right(wanted, contents[-1]["Key"], lo=passed)
            if passed == len(wanted):
                break
            if listed >= len(wanted) - passed:
                out.update(_headed([keys[k] for k in wanted[passed:]], endpoint_url))
                break
    except botocore.exceptions.ClientError as exc:
        if not s3._is_missing(exc):  # the package's one reading of S3's not-found codes
            raise
        # No such bucket: every shard is absent, as HEADs would have said one by one.
    return out
