"""A training job that streams its shards from the S3 endpoint and writes its checkpoints there too."""
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.pack import pack
from pipeline.spec import load_job
from pipeline.train.launch import train

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_train_from_s3_shards_with_s3_checkpoints(tmp_path, s3_endpoint, bucket, ray_local):
    root = f"s3://{bucket}/digits"
    pack("digits", root, shard_size=500, resolution=32, endpoint_url=s3_endpoint, progress=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_job(REPO / "jobs/quickstart.yaml", [
        f"data.root={root}", f"data.endpoint_url={s3_endpoint}", "data.shuffle_buffer=32",
        "train.steps=4", "train.global_batch=8", "train.log_every=2", "train.sample_every=100",
        "train.checkpoint_every=2",
        f"checkpoint.storage_path=s3://{bucket}/runs", f"checkpoint.endpoint_url={s3_endpoint}",
        f"tracking.tracking_uri={uri}", "tracking.registered_model=gan-s3", "eval=null",
    ])
    out = train(spec, run_name="s3-run", show_progress=False)

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="runs/s3-run/").get("Contents", [])]
    assert any(k.endswith("/state.pt") for k in keys), keys  # checkpoints landed in the bucket
    client = MlflowClient(tracking_uri=uri)
    assert client.get_metric_history(out.run_id, "data/samples_read")[-1].value == 4 * 8
    mv = client.get_model_version_by_alias("gan-s3", "champion")
    import hashlib

    manifest = s3.get_object(Bucket=bucket, Key="digits/manifest.json")["Body"].read()
    assert mv.tags["data_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    params = client.get_run(out.run_id).data.params
    assert not any("testing-secret" in v for v in params.values())  # credentials never reach MLflow
