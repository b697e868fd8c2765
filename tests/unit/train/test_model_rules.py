"""Model rules checked at the spec (before any worker starts), and which batch-norm sync a worker gets."""
import pytest
from torch import nn

from pipeline.gan.sync_bn import GlobalBatchNorm2d
from pipeline.spec import SpecError, parse_job
from pipeline.train.build import batch_norm_sync
from pipeline.train.dist import all_reduce_sum


def _job(**model):
    return {"name": "rules", "data": {"root": "unused", "resolution": model.pop("resolution", 32)}, "model": model,
            "train": {"steps": 1}, "scaling": {"num_workers": 2}}


@pytest.mark.parametrize("kind", ["dcgan", "resnet"])
def test_resolution_below_the_model_minimum_is_refused_at_the_spec(kind):
    with pytest.raises(SpecError) as e:
        parse_job(_job(kind=kind, resolution=8))
    assert "data.resolution 8" in str(e.value) and f"model.kind {kind}" in str(e.value) and ">= 16" in str(e.value)
    assert parse_job(_job(kind=kind, resolution=16)).data.resolution == 16


def test_sync_batch_norm_defaults_on_and_can_be_turned_off():
    assert parse_job(_job()).model.sync_batch_norm is True
    assert parse_job(_job(sync_batch_norm=False)).model.sync_batch_norm is False


def test_which_sync_a_worker_gets():
    on, off = parse_job(_job()).model, parse_job(_job(sync_batch_norm=False)).model
    no_norm = parse_job(_job(g_norm="none")).model
    assert batch_norm_sync(on, world_size=1, backend="gloo", all_reduce=all_reduce_sum) is None  # one rank: nothing to sync
    assert batch_norm_sync(off, world_size=2, backend="gloo", all_reduce=all_reduce_sum) is None
    assert batch_norm_sync(no_norm, world_size=2, backend="gloo", all_reduce=all_reduce_sum) is None
    assert batch_norm_sync(on, world_size=2, backend="nccl", all_reduce=all_reduce_sum) == nn.SyncBatchNorm.convert_sync_batchnorm
    g = batch_norm_sync(on, world_size=2, backend="gloo", all_reduce=all_reduce_sum)(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm2d(3)))
    assert isinstance(g[1], GlobalBatchNorm2d)
