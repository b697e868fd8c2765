"""A class-conditional R3GAN from the job file to the HTTP answer, with real parts: digits packed with
their 10 classes, `train()` on 2 Ray workers against a real `mlflow server` (periodic eval on, so the
per-class scores are logged), the registered version loaded with `mlflow.pytorch.load_model` and
sampled by class, `ganpipe sample --class` to PNG and .npz, and `mlflow models serve` answering a
request that names classes (and a 400, not a crash, for a class out of range).
"""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tracking import names
from pipeline.train.launch import train
from tests.integration.test_serving import _invoke, serve
from tests.support import short_job

pytestmark = pytest.mark.integration

NAME, Z_DIM, RES = "gan-conditional", 8, 32  # short_job packs the digits at 32 px


@pytest.fixture
def trained(mlflow_server, ray_local, tmp_path):
    spec = short_job(tmp_path, steps=20, batch=8, tracking_uri=mlflow_server.uri, registered_model=NAME, overrides=[
        "model.kind=r3gan", "model.widths=[16, 8, 8, 8]", "model.blocks_per_stage=1", f"model.z_dim={Z_DIM}",
        "model.conditional=true", "loss.kind=relativistic",
        "regularization=[{kind: r1, gamma: 0.05}, {kind: r2, gamma: 0.05}, {kind: ema, half_life_images: 50}]",
        "optim.g={lr: {kind: cosine, start: 2.0e-4, end: 5.0e-5, steps: 20}, betas: [0.0, 0.99]}",
        "train.eval_every=10", "train.sample_every=10", "train.checkpoint_every=10",
        f"eval={{num_samples: 200, classifier_steps: 30, cache_dir: {tmp_path / 'cache'}}}",
    ])
    out = train(spec, run_name="cond", show_progress=False)
    return out, mlflow_server.uri


def test_conditional_run_registers_a_class_conditional_generator(trained, tmp_path):
    out, uri = trained
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(out.run_id)
    metrics = run.data.metrics
    assert 0.0 <= metrics[names.EVAL_ACCURACY] <= 1.0
    assert names.eval_class_metric("3", "fd") in metrics and names.eval_class_metric("9", "accuracy") in metrics
    assert "optim/g_lr" in metrics and "reg/r2" in metrics
    assert run.data.params["model.num_classes"] == "10"
    grids = [f.path for f in client.list_artifacts(out.run_id, "samples")]
    assert grids, "sample grids are logged"
    grid = Image.open(client.download_artifacts(out.run_id, grids[-1], str(tmp_path)))
    assert grid.size[1] == 10 * (RES + 2) + 2, "one row per class"

    (version,) = client.search_model_versions(f"name='{NAME}'")
    assert version.tags[names.NUM_CLASSES] == "10"
    assert json.loads(version.tags[names.CLASS_NAMES]) == [str(d) for d in range(10)]
    assert names.ACCURACY in version.tags

    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    assert info.metadata["class_names"] == [str(d) for d in range(10)]
    assert info.signature.inputs.inputs[0].shape[-1] == Z_DIM + 1  # z, then the class
    model = mlflow.pytorch.load_model(f"models:/{NAME}@champion")
    z = torch.randn(4, Z_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        as_3 = model(torch.cat([z, torch.full((4, 1), 3.0)], 1))
        as_7 = model(torch.cat([z, torch.full((4, 1), 7.0)], 1))
    assert as_3.shape == (4, 3, RES, RES) and as_3.min() >= -1 and as_3.max() <= 1
    assert (as_3 - as_7).abs().max() > 1e-4, "the class changes the image"

    runner = CliRunner()
    npz = tmp_path / "threes.npz"
    res = runner.invoke(app, ["sample", f"models:/{NAME}@champion", "--class", "3", "-n", "5", "-o", str(npz),
                              "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    saved = np.load(npz)
    assert saved["images"].shape == (5, RES, RES, 3) and saved["images"].dtype == np.uint8
    assert saved["labels"].tolist() == [3] * 5 and saved["class_names"].tolist() == [str(d) for d in range(10)]
    png = tmp_path / "rows.png"
    res = runner.invoke(app, ["sample", f"models:/{NAME}@champion", "-n", "4", "-o", str(png), "--tracking-uri", uri])
    assert res.exit_code == 0 and Image.open(png).size == (4 * (RES + 2) + 2, 10 * (RES + 2) + 2), res.output
    res = runner.invoke(app, ["sample", f"models:/{NAME}@champion", "--class", "cat", "-o", str(png), "--tracking-uri", uri])
    assert res.exit_code != 0 and "unknown class 'cat'" in res.output + (res.stderr or "")

    with serve(uri, f"models:/{NAME}@champion", tmp_path) as url:
        rows = np.concatenate([z.numpy(), np.array([[3.0], [3.0], [7.0], [7.0]], dtype=np.float32)], axis=1)
        served = np.asarray(_invoke(url, {"inputs": rows.tolist()})["predictions"], dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(rows))
        torch.testing.assert_close(torch.from_numpy(served), want, atol=1e-5, rtol=0)
        bad = rows.copy()
        bad[0, -1] = 10.0  # there are classes 0..9
        with pytest.raises(Exception) as err:
            _invoke(url, {"inputs": bad.tolist()})
        assert getattr(err.value, "code", None) == 400
        assert np.asarray(_invoke(url, {"inputs": rows.tolist()})["predictions"]).shape == (4, 3, RES, RES), \
            "the server still answers after a bad request"
