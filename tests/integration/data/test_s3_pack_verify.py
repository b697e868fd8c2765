"""Pack to a real S3 endpoint (moto server), list, verify, re-pack; manifest checks over HEAD."""

import json

import boto3
import pytest
from typer.testing import CliRunner

from pipeline.data import s3
from pipeline.data.cli import data_app
from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.manifest import check_shards, load_manifest

runner = CliRunner()


def cli(*args):
    return runner.invoke(data_app, [str(a) for a in args])


def test_pack_ls_verify_and_repack_sends_nothing(s3_endpoint, bucket, small_npz):
    url = f"s3://{bucket}/small"
    packed = cli("pack", small_npz, "--out", url, "--shard-size", 30, "--resolution", 8, "--endpoint-url", s3_endpoint, "-q")
    assert packed.exit_code == 0, packed.output
    assert "4 shard(s) uploaded" in packed.output
    manifest, snapshot = load_manifest(url, endpoint_url=s3_endpoint)
    assert [s["samples"] for s in manifest["shards"]] == [30, 30, 30, 10]

    listed = cli("ls", url, "--endpoint-url", s3_endpoint)
    assert listed.exit_code == 0 and snapshot in listed.output and "100" in listed.output

    verified = cli("verify", url, "--endpoint-url", s3_endpoint, "-q")
    assert verified.exit_code == 0, verified.output
    assert f"100 samples match snapshot {snapshot}" in verified.output

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    stamps = {o["Key"]: o["LastModified"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    again = cli("pack", small_npz, "--out", url, "--shard-size", 30, "--resolution", 8, "--endpoint-url", s3_endpoint, "-q")
    assert again.exit_code == 0 and "0 shard(s) uploaded" in again.output
    assert load_manifest(url, endpoint_url=s3_endpoint)[1] == snapshot
    assert {o["Key"]: o["LastModified"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]} == stamps


def test_verify_names_a_tampered_shard(s3_endpoint, bucket, small_npz):
    url = f"s3://{bucket}/t"
    assert cli("pack", small_npz, "--out", url, "--shard-size", 30, "--resolution", 8, "--endpoint-url", s3_endpoint, "-q").exit_code == 0
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    body = bytearray(client.get_object(Bucket=bucket, Key="t/shard-000002.tar")["Body"].read())
    body[-600] ^= 0xFF  # inside the end-of-archive padding: same size, same samples, other bytes
    client.put_object(Bucket=bucket, Key="t/shard-000002.tar", Body=bytes(body))
    result = cli("verify", url, "--endpoint-url", s3_endpoint, "-q")
    assert result.exit_code == 1
    assert "shard-000002.tar: sha256" in result.output
    assert "shard-000001.tar" not in result.output


def test_check_shards_over_head_requests(s3_endpoint, bucket, small_npz):
    from pipeline.data.pack import pack

    url = f"s3://{bucket}/c"
    pack(small_npz, url, shard_size=30, resolution=8, endpoint_url=s3_endpoint, progress=False)
    spec = DataSpec(root=url, resolution=8, endpoint_url=s3_endpoint)
    assert check_shards(spec)["num_samples"] == 100
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.delete_object(Bucket=bucket, Key="c/shard-000000.tar")
    client.put_object(Bucket=bucket, Key="c/shard-000003.tar", Body=b"short")
    with pytest.raises(DataError) as info:
        check_shards(spec)
    assert "missing shard: s3://" in str(info.value) and "shard-000000.tar" in str(info.value)
    assert "size mismatch" in str(info.value) and "shard-000003.tar is 5 bytes" in str(info.value)


def test_large_files_go_up_in_multipart_once(s3_endpoint, bucket, tmp_path):
    path = tmp_path / "big.tar"
    path.write_bytes(bytes(range(256)) * (6 * 4096))  # 6 MiB
    url = f"s3://{bucket}/big.tar"
    assert s3.upload_if_changed(str(path), url, "abc", endpoint_url=s3_endpoint, multipart_threshold=5 << 20)
    etag = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=bucket, Key="big.tar")["ETag"]
    assert etag.strip('"').endswith("-2")  # a multipart ETag names its part count
    assert not s3.upload_if_changed(str(path), url, "abc", endpoint_url=s3_endpoint, multipart_threshold=5 << 20)
    assert s3.get_bytes(url, endpoint_url=s3_endpoint) == path.read_bytes()


def test_endpoint_from_environment(s3_endpoint, bucket, small_npz, monkeypatch):
    from pipeline.data.pack import pack

    url = f"s3://{bucket}/env"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    pack(small_npz, url, shard_size=50, resolution=8, progress=False)  # no endpoint_url anywhere
    manifest, _ = load_manifest(url)
    assert manifest["num_samples"] == 100 and json.dumps(manifest).count("testing") == 0
