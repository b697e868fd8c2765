import pydantic
import pytest

from pipeline.eval.config import EvalSpec, extractor_key

SHA = "ab" * 32


def test_defaults_are_the_offline_classifier():
    spec = EvalSpec()
    assert (spec.extractor, spec.num_samples, spec.classifier_steps, spec.classifier_width) == ("classifier", 2000, 300, 32)


@pytest.mark.parametrize("bad", [
    {"extractor": "inception"},                                   # unpinned weights
    {"extractor": "inception", "inception_path": "/x.pt"},        # no hash
    {"extractor": "inception", "inception_path": "/x.pt", "inception_sha256": "123"},  # not a digest
    {"num_samples": 1},                                           # no covariance from one sample
    {"bogus": 1},                                                 # extra="forbid"
])
def test_rejects_invalid_specs(bad):
    with pytest.raises(pydantic.ValidationError):
        EvalSpec(**bad)


def test_frozen_and_sha_normalised():
    spec = EvalSpec(extractor="inception", inception_path="/x.pt", inception_sha256=SHA.upper())
    assert spec.inception_sha256 == SHA
    with pytest.raises(pydantic.ValidationError):
        spec.num_samples = 5


def test_key_follows_manifest_and_extractor_settings_only():
    base = EvalSpec()
    k = extractor_key(base, "m1")
    assert len(k) == 64 and k == extractor_key(EvalSpec(), "m1")
    assert extractor_key(base, "m2") != k
    assert extractor_key(EvalSpec(classifier_width=16), "m1") != k
    assert extractor_key(EvalSpec(classifier_steps=10), "m1") != k
    # Neither the sample count nor where the cache lives changes the features.
    assert extractor_key(EvalSpec(num_samples=10, cache_dir="/elsewhere"), "m1") == k
    inc = dict(extractor="inception", inception_sha256=SHA)
    assert extractor_key(EvalSpec(inception_path="/a.pt", **inc), "m1") == \
        extractor_key(EvalSpec(inception_path="/b.pt", **inc), "m1") != k
