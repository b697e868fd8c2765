import pytest
from pydantic import ValidationError

from pipeline.data.config import DataSpec


def test_defaults_are_resampled_and_fail_on_corrupt():
    spec = DataSpec(root="s3://bucket/digits")
    assert (spec.sampling, spec.on_corrupt, spec.resolution, spec.loader_workers) == ("resampled", "fail", 32, 0)


@pytest.mark.parametrize("bad", [0, 4, 12, 48, -32])
def test_resolution_must_be_power_of_two_at_least_8(bad):
    with pytest.raises(ValidationError, match="resolution"):
        DataSpec(root="/data", resolution=bad)


def test_unknown_field_is_refused():
    with pytest.raises(ValidationError, match="extra"):
        DataSpec(root="/data", shard_size=3)


def test_spec_is_frozen():
    spec = DataSpec(root="/data")
    with pytest.raises(ValidationError):
        spec.root = "/elsewhere"


@pytest.mark.parametrize(
    "field,value",
    [("shuffle_buffer", -1), ("loader_workers", -2), ("max_corrupt_fraction", 1.5), ("sampling", "random"), ("epoch_tail", "wrap")],
)
def test_out_of_range_values_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        DataSpec(root="/data", **{field: value})


def test_root_scheme_and_endpoint_checked():
    with pytest.raises(ValidationError, match="root"):
        DataSpec(root="gs://bucket/x")
    with pytest.raises(ValidationError, match="endpoint_url"):
        DataSpec(root="s3://b/x", endpoint_url="127.0.0.1:9000")


def test_skip_needs_a_corrupt_budget():
    with pytest.raises(ValidationError, match="max_corrupt_fraction"):
        DataSpec(root="/data", on_corrupt="skip")
    assert DataSpec(root="/data", on_corrupt="skip", max_corrupt_fraction=0.01).on_corrupt == "skip"


def test_round_trips_through_json():
    spec = DataSpec(root="s3://b/p", sampling="epoch", loader_workers=2, endpoint_url="http://127.0.0.1:9000")
    assert DataSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_credentials_in_the_endpoint_are_refused_without_echoing_them():
    with pytest.raises(ValidationError) as info:
        DataSpec(root="s3://b/x", endpoint_url="http://AKIAXX:s3cr3t@minio:9000")
    assert "credentials" in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("label_key", ["auto", "none", "cls", "json.label", "json.meta.class"])
def test_label_keys_accepted(label_key):
    assert DataSpec(root="/d", label_key=label_key).label_key == label_key


@pytest.mark.parametrize("label_key", ["json", "json.", "txt", "label"])
def test_unknown_label_key_is_refused_naming_the_choices(label_key):
    with pytest.raises(ValidationError, match="label_key must be auto, none, cls or json.<field>"):
        DataSpec(root="/d", label_key=label_key)


def test_transform_resize_below_the_resolution_is_refused():
    with pytest.raises(ValidationError, match="transform.resize 32 is smaller than resolution 64"):
        DataSpec(root="/d", resolution=64, transform={"resize": 32})
    with pytest.raises(ValidationError, match="crop"):
        DataSpec(root="/d", transform={"crop": "corner"})
    assert DataSpec(root="/d", image_key=".JPG").image_key == "jpg"
