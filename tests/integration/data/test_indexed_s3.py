"""Shards written by webdataset's own ShardWriter (JPEGs of mixed non-square sizes, labels inside
.json, captions in .txt, one truncated JPEG), uploaded with plain boto3 to the S3 endpoint, then
indexed, verified and streamed with the same epoch and resume guarantees as packed shards."""

import itertools
import json
import os

import boto3
import pytest
from typer.testing import CliRunner

from pipeline.data.cli import data_app
from pipeline.data.config import DataSpec
from pipeline.data.manifest import load_manifest
from pipeline.data.stream import make_batches
from tests.unit.data.foreign_shards import write_foreign_shards

WORLD, BATCH = 2, 5  # 60 samples -> 6 batches per rank per epoch, 3 per loader worker
runner = CliRunner()


def upload_folder(folder: str, endpoint: str, bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for name in sorted(os.listdir(folder)):
        s3.upload_file(os.path.join(folder, name), bucket, f"{prefix}/{name}")


@pytest.fixture
def foreign_s3(tmp_path, s3_endpoint, bucket):
    """60 samples in shards of 16, 16, 16, 12 under s3://bucket/laion/; img000007 is corrupt."""
    folder = str(tmp_path / "shards")
    written = write_foreign_shards(folder, 60, 16, corrupt=7, seed=3)
    upload_folder(folder, s3_endpoint, bucket, "laion")
    return f"s3://{bucket}/laion", written


def cli(*args) -> "object":
    return runner.invoke(data_app, list(args), catch_exceptions=False)


def test_index_verify_and_missing_shard_over_s3(tmp_path, s3_endpoint, bucket, foreign_s3):
    root, written = foreign_s3
    out = cli("index", root, "--label-key", "json.label", "--endpoint-url", s3_endpoint, "--cache-dir", str(tmp_path), "-q")
    assert out.exit_code == 0, out.output
    assert "ok: 4 shard(s), 60 samples indexed; image jpg, label json.label" in out.output
    manifest, snapshot = load_manifest(root, endpoint_url=s3_endpoint)
    assert manifest["kind"] == "indexed" and manifest["members"] == {"jpg": 60, "json": 60, "txt": 60}
    assert snapshot in out.output

    failed = cli("verify", root, "--endpoint-url", s3_endpoint, "-q")
    assert failed.exit_code == 1 and "1 difference(s)" in failed.output and written["corrupt"] in failed.output
    skipped = cli("verify", root, "--endpoint-url", s3_endpoint, "--on-corrupt", "skip", "--max-corrupt-fraction", "0.05", "-q")
    assert skipped.exit_code == 0, skipped.output
    assert "ok: 4 shard(s), 60 samples match" in skipped.output and "1 corrupt sample(s) skipped" in skipped.output
    assert written["corrupt"] in skipped.output

    # a pattern naming a shard the prefix lacks: exit 2, the absent URL named, nothing written
    boto3.client("s3", endpoint_url=s3_endpoint).delete_object(Bucket=bucket, Key="laion/shard-000002.tar")
    missing = runner.invoke(data_app, ["index", root + "/shard-{000000..000003}.tar", "--out", f"s3://{bucket}/index2",
                                       "--endpoint-url", s3_endpoint, "--cache-dir", str(tmp_path), "-q"])
    assert missing.exit_code == 2
    assert "1 of the 4 shards named by" in missing.output and f"{root}/shard-000002.tar" in missing.output
    listing = cli("ls", f"s3://{bucket}/index2", "--endpoint-url", s3_endpoint)
    assert listing.exit_code == 2 and "no manifest.json" in listing.output


@pytest.fixture
def indexed_s3(tmp_path, s3_endpoint, bucket, foreign_s3):
    root, written = foreign_s3
    from pipeline.data.index import index

    # the manifest in its own prefix: the shards' place may be read-only
    out = f"s3://{bucket}/index"
    index(root, out=out, label_key="json.label", endpoint_url=s3_endpoint, cache_dir=str(tmp_path / "cache"))
    return out, written


def spec_for(url, endpoint):
    return DataSpec(root=url, endpoint_url=endpoint, resolution=32, sampling="epoch", shuffle_buffer=8, loader_workers=2,
                    on_corrupt="skip", max_corrupt_fraction=0.05, transform={"crop": "random", "hflip": True})


def rank_batches(spec, rank, batches, position=None):
    stream = make_batches(spec, rank=rank, world_size=WORLD, batch_size=BATCH, seed=0, position=position, with_keys=True)
    out = [(images, list(keys)) for images, _, keys in itertools.islice(iter(stream), batches)]
    return out, stream


def test_resume_mid_epoch_replays_nothing_and_misses_nothing(s3_endpoint, indexed_s3):
    url, written = indexed_s3
    spec = spec_for(url, s3_endpoint)
    whole = [rank_batches(spec, r, 6)[0] for r in range(WORLD)]  # one uninterrupted epoch
    epoch_keys = sorted(k for r in whole for _, ks in r for k in ks)
    # every sample once; the corrupt one replaced by a repeat of a good one from its batch
    assert len(epoch_keys) == 60 and set(epoch_keys) == set(written["keys"]) - {written["corrupt"]}
    consumed, positions = [], []
    for r in range(WORLD):
        batches, stream = rank_batches(spec, r, 3)  # crash after 3 of 6 batches
        consumed.append(batches)
        positions.append(stream.state())
    assert positions[0] == positions[1]
    saved = json.loads(json.dumps(positions[0]))  # only rank 0 checkpoints; every rank resumes from it
    for r in range(WORLD):
        rest, stream = rank_batches(spec, r, 3, position=saved)
        consumed[r] += rest
        assert stream.state()["epoch"] == 1 and stream.state()["batches_in_epoch"] == 0
        # the resumed epoch is the uninterrupted one, batch for batch: same keys, same crops and flips
        assert [ks for _, ks in consumed[r]] == [ks for _, ks in whole[r]]
        assert all((a == b).all() for (a, _), (b, _) in zip(consumed[r], whole[r]))
