"""scaling.placement reaches Ray's ScalingConfig, and a group the nodes cannot hold is explained."""
import copy

import pytest

from pipeline.spec import parse_job
from pipeline.train.launch import shortfall

BASE = {
    "name": "t",
    "data": {"root": "data/digits", "resolution": 32},
    "train": {"steps": 10, "global_batch": 8},
}


def _spec(**scaling):
    raw = copy.deepcopy(BASE)
    raw["scaling"] = scaling
    raw["train"]["global_batch"] = 6 * scaling.get("num_workers", 1)
    return parse_job(raw)


def test_default_placement_is_pack_and_maps_to_ray_strategies():
    from ray.train import ScalingConfig

    assert _spec().scaling.placement == "pack"  # today's behaviour: Ray's own default
    for placement in ("pack", "spread", "strict_spread"):
        # the exact mapping _fit uses; Ray's placement groups take these upper-case names
        config = ScalingConfig(num_workers=2, placement_strategy=_spec(placement=placement).scaling.placement.upper())
        assert config.placement_strategy in ("PACK", "SPREAD", "STRICT_SPREAD")


@pytest.mark.parametrize("placement", ["pack", "spread", "strict_spread"])
def test_two_nodes_hold_two_workers_whatever_the_placement(placement):
    spec = _spec(num_workers=2, placement=placement)
    assert shortfall(spec, [{"CPU": 1.0}, {"CPU": 1.0}]) is None


def test_strict_spread_needs_a_node_per_worker():
    spec = _spec(num_workers=2, placement="strict_spread")
    msg = shortfall(spec, [{"CPU": 4.0}])
    assert msg is not None and "strict_spread" in msg and "2 nodes" in msg and "has 1" in msg
    assert shortfall(_spec(num_workers=2, placement="pack"), [{"CPU": 4.0}]) is None


def test_a_worker_larger_than_any_node_is_explained():
    spec = _spec(num_workers=1, resources_per_worker={"CPU": 3})
    msg = shortfall(spec, [{"CPU": 2.0}, {"CPU": 2.0}])  # 4 CPUs in total, but 2 per node
    assert msg is not None and "single node" in msg and "scaling.resources_per_worker" in msg


def test_too_few_resources_in_total_names_the_numbers():
    msg = shortfall(_spec(num_workers=3), [{"CPU": 2.0}])
    assert "3 workers" in msg and "'CPU': 3" in msg and "'CPU': 2" in msg
