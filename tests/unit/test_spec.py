"""The job spec refuses bad values naming the field, and every job in jobs/ parses."""
import copy
from pathlib import Path

import pytest
import yaml

from pipeline.spec import SpecError, apply_overrides, load_job, parse_job

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "name": "t",
    "data": {"root": "data/digits", "resolution": 32},
    "train": {"steps": 10, "global_batch": 8},
    "scaling": {"num_workers": 2},
    "regularization": [{"kind": "l2", "weight": 1e-4, "target": "discriminator"}],
}


def spec_with(path: str, value):
    raw = copy.deepcopy(BASE)
    return apply_overrides(raw, [f"{path}={value}"])


def refused(raw) -> str:
    with pytest.raises(SpecError) as e:
        parse_job(raw)
    return str(e.value)


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_file_parses(job):
    spec = load_job(job)
    assert spec.name


def test_base_spec_is_valid_and_frozen():
    spec = parse_job(copy.deepcopy(BASE))
    assert spec.per_worker_batch == 4
    with pytest.raises(Exception):
        spec.train.steps = 5  # frozen


@pytest.mark.parametrize(
    "path,value,field,hint",
    [
        ("data.colour", "red", "data.colour", "Extra inputs"),
        ("model.kind", "stylegan9", "model.kind", "'dcgan', 'resnet' or 'r3gan'"),
        ("model.z_dim", "0", "model.z_dim", "greater than or equal to 1"),
        ("loss.kind", "softmax", "loss.kind", "nonsaturating"),
        ("optim.g.lr", "-1", "optim.g.lr", "greater than 0"),
        ("train.steps", "0", "train.steps", "greater than or equal to 1"),
        ("train.global_batch", "7", "global_batch", "divisible by scaling.num_workers"),
        ("scaling.num_workers", "0", "scaling.num_workers", "greater than or equal to 1"),
        ("scaling.placement", "everywhere", "scaling.placement", "'strict_spread'"),
        ("tracking.nope", "1", "tracking.nope", "Extra inputs"),
        ("checkpoint.num_to_keep", "0", "checkpoint.num_to_keep", "greater than or equal to 1"),
        ("data.sampling", "sometimes", "data.sampling", "resampled"),
        ("bogus", "1", "bogus", "Extra inputs"),
    ],
)
def test_bad_values_name_the_field(path, value, field, hint):
    msg = refused(spec_with(path, value))
    assert field in msg and hint in msg, msg


def test_unknown_regularizer_kind_lists_allowed():
    raw = copy.deepcopy(BASE)
    raw["regularization"] = [{"kind": "dropout9", "weight": 1}]
    msg = refused(raw)
    assert "regularization.0" in msg and "'l1'" in msg and "'r1'" in msg and "'ema'" in msg


def test_negative_lambda_is_refused():
    raw = copy.deepcopy(BASE)
    raw["regularization"] = [{"kind": "l1", "weight": -0.1}]
    msg = refused(raw)
    assert "regularization.0" in msg and "weight" in msg and "-0.1" in msg


@pytest.mark.parametrize(
    "regs,reason",
    [
        ([{"kind": "ema", "beta": 0.99}, {"kind": "ema", "beta": 0.9}], "second `ema`"),
        ([{"kind": "r1", "gamma": 1, "every": 0}], "every"),
        ([{"kind": "wgan_gp"}], "allow_mismatch"),
        ([{"kind": "ema"}], "exactly one of `beta` or `half_life_images`"),
        ([{"kind": "r1", "gamma": 1, "every": 4}, {"kind": "r2", "gamma": 1, "every": 8}], "share one `every`"),
        ([{"kind": "diffaugment"}, {"kind": "adaptive_augment"}], "not both"),
        ([{"kind": "l2", "weight": 1, "target": "everything"}], "target"),
    ],
)
def test_invalid_combinations_give_a_reason(regs, reason):
    raw = copy.deepcopy(BASE)
    raw["regularization"] = regs
    assert reason in refused(raw)


def test_r1_accepts_gamma_and_weight_penalties_may_repeat_on_other_targets():
    raw = copy.deepcopy(BASE)
    raw["regularization"] = [
        {"kind": "r1", "gamma": 0.5, "every": 16},
        {"kind": "l2", "weight": 1e-4, "target": "discriminator"},
        {"kind": "l2", "weight": 1e-5, "target": "generator"},
    ]
    spec = parse_job(raw)
    assert spec.regularization[0].weight == 0.5 and spec.regularization[0].every == 16


def test_wgan_gp_with_wasserstein_loss_is_fine():
    raw = copy.deepcopy(BASE)
    raw["loss"] = {"kind": "wasserstein"}
    raw["regularization"] = [{"kind": "wgan_gp", "weight": 10}]
    assert parse_job(raw).regularization[0].weight == 10


@pytest.mark.parametrize("path", ["data.endpoint_url", "checkpoint.endpoint_url", "tracking.tracking_uri"])
def test_credentials_in_urls_are_refused_and_never_echoed(path):
    msg = refused(spec_with(path, "http://key:secret@127.0.0.1:9000"))
    assert path in msg and "credentials" in msg and "secret" not in msg


def test_overrides_keep_types_and_reject_garbage():
    raw = apply_overrides(copy.deepcopy(BASE), ["train.steps=50", "optim.g.betas=[0.0, 0.99]", "scaling.use_gpu=false"])
    spec = parse_job(raw)
    assert spec.train.steps == 50 and spec.optim.g.betas == (0.0, 0.99) and spec.scaling.use_gpu is False
    with pytest.raises(SpecError, match="KEY=VALUE"):
        apply_overrides({}, ["train.steps"])


def test_overrides_address_a_regularizer_by_its_kind():
    raw = apply_overrides(copy.deepcopy(BASE), ["regularization.l2.weight=3.0e-4", "regularization.r1.gamma=0.5"])
    spec = parse_job(raw)
    assert [(r.kind, r.weight) for r in spec.regularization] == [("l2", 3.0e-4), ("r1", 0.5)]  # r1 added, l2 changed
    with pytest.raises(SpecError, match=r"--set regularization.r9.gamma: unknown regularizer kind 'r9'; allowed: .*r1"):
        apply_overrides(copy.deepcopy(BASE), ["regularization.r9.gamma=1"])
    with pytest.raises(SpecError, match=r"--set train.steps.x: `train.steps` is a value"):
        apply_overrides(copy.deepcopy(BASE), ["train.steps.x=1"])


def test_load_job_reports_yaml_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="cannot read job spec"):
        load_job(p)
    p.write_text(yaml.safe_dump(["not", "a", "mapping"]))
    with pytest.raises(SpecError, match="mapping"):
        load_job(p)


def test_conditional_takes_its_classes_from_the_manifest_and_refuses_unlabelled_data():
    from pipeline.spec import SpecError, with_classes

    spec = parse_job({"name": "c", "data": {"root": "/data/x"}, "model": {"conditional": True}, "train": {"steps": 1}})
    resolved = with_classes(spec, {"classes": ["cat", "dog"]})
    assert resolved.model.num_classes == 2 and resolved.model.class_names == ("cat", "dog")
    indexed = with_classes(spec, {"classes": None, "labels": {"values": [0, 1, 2]}})
    assert indexed.model.class_names == ("0", "1", "2")
    with pytest.raises(SpecError, match="model.conditional: true, but the data at /data/x have no class labels"):
        with_classes(spec, {"classes": None, "labels": {"values": None}})
    with pytest.raises(SpecError, match="no class labels"):  # labels that are not 0..K-1 cannot index classes
        with_classes(spec, {"classes": None, "labels": {"values": [3, 7]}})
    pinned = parse_job({"name": "c", "data": {"root": "/d"}, "model": {"conditional": True, "num_classes": 3}, "train": {"steps": 1}})
    with pytest.raises(SpecError, match="model.num_classes: 3, but the data at /d have 2 classes"):
        with_classes(pinned, {"classes": ["cat", "dog"]})
    assert with_classes(parse_job({"name": "u", "data": {"root": "/d"}, "train": {"steps": 1}}), {}).model.num_classes is None


def test_class_strength_is_a_conditional_models_number_or_schedule():
    base = {"name": "c", "data": {"root": "/d"}, "train": {"steps": 1}}
    with pytest.raises(SpecError, match="model.class_strength is set but model.conditional is false"):
        parse_job({**base, "model": {"class_strength": 0.5}})
    ramp = {"kind": "linear", "start": 0, "end": 1, "steps": 100}
    assert parse_job({**base, "model": {"conditional": True, "class_strength": ramp}}).model.class_strength.steps == 100


def test_r3gan_needs_a_preset_or_widths_that_reach_the_resolution():
    base = {"name": "r", "data": {"root": "/d", "resolution": 64}, "train": {"steps": 1}}
    with pytest.raises(SpecError, match="give exactly one of `preset`"):
        parse_job({**base, "model": {"kind": "r3gan"}})
    with pytest.raises(SpecError, match="model.preset cifar10 gives 4 widths .* resolution 64 needs 5"):
        parse_job({**base, "model": {"kind": "r3gan", "preset": "cifar10"}})
    with pytest.raises(SpecError, match="r3gan's"):
        parse_job({**base, "model": {"kind": "dcgan", "preset": "narrow"}})
    assert parse_job({**base, "model": {"kind": "r3gan", "preset": "ffhq"}}).model.preset == "ffhq"
