"""Short 2-worker jobs at 32 and 64 px from ShardWriter-written JPEG shards on the S3 endpoint,
indexed in place, through to a registered generator of the job's resolution; then `ganpipe eval`
scores it against the same indexed shards."""

import os
from pathlib import Path

import boto3
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipeline.data.index import index
from pipeline.spec import load_job
from pipeline.train.launch import train
from tests.unit.data.foreign_shards import write_foreign_shards

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("foreign") / "shards")
    # 240 samples (8 shards of 30): eval holds out 10% (24), and its memorization check needs >= 20
    write_foreign_shards(folder, 240, 30, sides=(48, 160), seed=5)
    return folder


@pytest.mark.parametrize("resolution", [32, 64])
def test_train_from_indexed_s3_shards(tmp_path, s3_endpoint, bucket, ray_local, shard_folder, resolution):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in sorted(os.listdir(shard_folder)):
        s3.upload_file(os.path.join(shard_folder, name), bucket, f"foreign/{name}")
    root = f"s3://{bucket}/foreign"
    report = index(root, label_key="json.label", endpoint_url=s3_endpoint, cache_dir=str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    steps, batch = 12, 8
    spec = load_job(REPO / "jobs/quickstart.yaml", [
        f"data.root={root}", f"data.endpoint_url={s3_endpoint}", f"data.resolution={resolution}",
        "data.sampling=epoch", "data.shuffle_buffer=16", "data.transform={crop: random, hflip: true}",
        f"train.steps={steps}", f"train.global_batch={batch}", "train.log_every=6", "train.sample_every=100",
        "train.checkpoint_every=6", f"checkpoint.storage_path={tmp_path / 'runs'}",
        f"tracking.tracking_uri={uri}", f"tracking.registered_model=gan-foreign-{resolution}", "eval=null",
    ])
    out = train(spec, run_name=f"foreign-{resolution}", show_progress=False)

    client = MlflowClient(tracking_uri=uri)
    assert client.get_metric_history(out.run_id, "data/samples_read")[-1].value == steps * batch
    version = client.get_model_version_by_alias(f"gan-foreign-{resolution}", "champion")
    assert version.tags["data_manifest_sha256"] == report.snapshot  # the indexed manifest is the snapshot
    mlflow.set_tracking_uri(uri)
    generator = mlflow.pytorch.load_model(out.model_uri)
    with torch.no_grad():
        images = generator(torch.randn(2, spec.model.z_dim))
    assert images.shape == (2, 3, resolution, resolution)

    if resolution == 64:  # `ganpipe eval --data` on indexed shards: real images fitted to the generator's 64 px
        from pipeline.cli import app

        result = CliRunner().invoke(app, [
            "eval", out.model_uri, "--data", root, "--endpoint-url", s3_endpoint, "-n", "128", "--classifier-steps", "20",
            "--cache-dir", str(tmp_path / "evalcache"), "--tracking-uri", uri,
        ])
        assert result.exit_code == 0, result.output
        assert "FD " in result.output and "KID" in result.output
