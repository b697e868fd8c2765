"""Through a proxy that answers 503 SlowDown to some GETs and cuts others mid-body, the reader
resumes with Range + If-Match and sees exactly the bytes and samples it sees directly."""

import itertools
import logging

import boto3
from typer.testing import CliRunner

from pipeline.data import s3
from pipeline.data.cli import data_app
from pipeline.data.config import DataSpec
from pipeline.data.pack import pack
from pipeline.data.stream import make_batches
from pipeline.data.verify import verify


def test_verify_through_faults_matches_direct(s3_endpoint, bucket, small_npz, fault_proxy):
    url = f"s3://{bucket}/faulty"
    pack(small_npz, url, shard_size=30, resolution=8, endpoint_url=s3_endpoint, progress=False)
    direct = verify(url, endpoint_url=s3_endpoint)
    proxied = verify(url, endpoint_url=fault_proxy.url)
    assert direct.ok and proxied.ok
    assert [(s.name, s.samples, s.bytes, s.sha256) for s in proxied.shards] == [
        (s.name, s.samples, s.bytes, s.sha256) for s in direct.shards
    ]
    assert fault_proxy.cut > 0 and fault_proxy.failed > 0  # the faults really happened


def test_cli_verify_through_faults_never_prints_credentials(s3_endpoint, bucket, small_npz, fault_proxy, caplog):
    url = f"s3://{bucket}/quiet"
    pack(small_npz, url, shard_size=30, resolution=8, endpoint_url=s3_endpoint, progress=False)
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        result = CliRunner().invoke(data_app, ["verify", url, "--endpoint-url", fault_proxy.url, "-q"])
    assert result.exit_code == 0, result.output
    assert any("resuming" in r.getMessage() for r in caplog.records)  # our resume log fired
    text = result.output + caplog.text
    assert "testing-secret" not in text and "AWS_SECRET" not in text


def test_range_reader_resumes_a_large_object(s3_endpoint, bucket, fault_proxy):
    payload = bytes(itertools.islice(itertools.cycle(range(251)), 3 << 20))  # 3 MiB, no repeats at 1 MiB
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="blob", Body=payload)
    fault_proxy.configure(fail_every=3, cut_every=2, first=2)  # cut, 503, cut, pass, cut, 503...
    reader = s3.RangeReader(f"s3://{bucket}/blob", endpoint_url=fault_proxy.url)
    got = bytearray()
    chunk = bytearray(1 << 20)
    while n := reader.readinto(chunk):
        got += chunk[:n]
    assert bytes(got) == payload
    assert reader.resumes >= 2 and fault_proxy.failed >= 1


def test_streamed_epoch_through_faults_loses_and_repeats_nothing(s3_endpoint, bucket, small_npz, fault_proxy):
    url = f"s3://{bucket}/stream"
    pack(small_npz, url, shard_size=30, resolution=8, endpoint_url=s3_endpoint, progress=False)

    def epoch_keys(endpoint):
        spec = DataSpec(root=url, endpoint_url=endpoint, resolution=8, sampling="epoch", shuffle_buffer=8)
        stream = make_batches(spec, rank=0, world_size=1, batch_size=10, seed=0, with_keys=True)
        return [k for _, _, ks in itertools.islice(iter(stream), 10) for k in ks]

    assert epoch_keys(fault_proxy.url) == epoch_keys(s3_endpoint)
    assert fault_proxy.cut > 0


def test_resume_refuses_an_object_replaced_mid_read(s3_endpoint, bucket):
    import pytest

    from pipeline.data.errors import DataError

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=bucket, Key="swap", Body=b"a" * (2 << 20))
    reader = s3.RangeReader(f"s3://{bucket}/swap", endpoint_url=s3_endpoint)
    assert reader.readinto(bytearray(1 << 20)) > 0
    client.put_object(Bucket=bucket, Key="swap", Body=b"b" * (2 << 20))
    reader._drop_body()  # as if the connection had dropped here
    with pytest.raises(DataError, match="changed while it was being read"):
        reader.readinto(bytearray(1 << 20))
