import hashlib
import os
import warnings

import pytest
import torch
from torch import nn

from pipeline.eval.config import EvalSpec, extractor_key
from pipeline.eval.extractors import InceptionWeightsMismatch, InceptionWeightsMissing, load_extractor


class _Counter:
    """real_images_fn that counts how often the extractor asked for training data."""

    def __init__(self, data):
        self.data, self.calls = data, 0

    def __call__(self):
        self.calls += 1
        return self.data


def _spec(tmp_path, **kw):
    return EvalSpec(cache_dir=str(tmp_path), classifier_steps=30, classifier_width=4, **kw)


def test_classifier_is_trained_once_then_read_from_cache(tmp_path, toy_data):
    images = toy_data[0]
    spec, fn = _spec(tmp_path), _Counter(toy_data)
    first = load_extractor(spec, "m1", fn)
    assert fn.calls == 1
    path = tmp_path / extractor_key(spec, "m1") / "classifier.pt"
    assert path.is_file()
    assert not [p for p in os.listdir(path.parent) if p.startswith(".tmp-")]  # temp file renamed away
    torch.load(path, weights_only=True)  # plain tensors + JSON, no pickled module

    second = load_extractor(spec, "m1", fn)
    assert fn.calls == 1  # cache hit: no retraining
    assert torch.equal(first(images[:10]), second(images[:10]))
    assert second.report["heldout_accuracy"] == first.report["heldout_accuracy"]

    load_extractor(spec, "m2", fn)  # another data set → another key → trains again
    assert fn.calls == 2
    assert extractor_key(spec, "m2") != extractor_key(spec, "m1")


def test_classifier_without_labels_says_what_to_do(tmp_path, toy_data):
    with pytest.raises(ValueError, match="inception"):
        load_extractor(_spec(tmp_path), "m1", lambda: (toy_data[0], None))


class _TinyInception(nn.Module):
    """Stands in for inception-2015-12-05.pt: takes 0..255 floats, 'features' are per-channel means
    plus the input height (to see the resize), only when asked with return_features=True."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        feats = torch.cat([img.mean(dim=(2, 3)), torch.full_like(img[:, :1, 0, 0], img.shape[2])], dim=1)
        return feats if return_features else feats[:, :1]


@pytest.fixture
def tiny_inception(tmp_path):
    path = tmp_path / "inception.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the pinned file's format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyInception()).save(str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _inception_spec(tmp_path, path, sha):
    return EvalSpec(extractor="inception", inception_path=str(path), inception_sha256=sha,
                    cache_dir=str(tmp_path / "cache"))


def _never():
    raise AssertionError("inception must not ask for training data")


def test_inception_file_with_matching_sha_loads_and_yields_features(tmp_path, tiny_inception):
    path, sha = tiny_inception
    ext = load_extractor(_inception_spec(tmp_path, path, sha), "m1", _never)
    x = torch.stack([torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 1.0)])
    f = ext(x)
    # [-1, 1] → uint8 levels 0..255 (stylegan2-ada's convention), resized to 299, features mode.
    assert f.shape == (2, 4)
    torch.testing.assert_close(f[:, :3], torch.tensor([[0.0] * 3, [255.0] * 3]))
    assert f[:, 3].tolist() == [299.0, 299.0]
    # file:// URIs name the same file
    ext2 = load_extractor(_inception_spec(tmp_path, path.as_uri(), sha), "m1", _never)
    assert torch.equal(ext2(x), f)


def test_missing_inception_file_names_path_and_sha(tmp_path):
    path, sha = tmp_path / "weights" / "inception-2015-12-05.pt", "0123456789abcdef" * 4
    with pytest.raises(InceptionWeightsMissing) as err:
        load_extractor(_inception_spec(tmp_path, path, sha), "m1", _never)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(path) in msg and sha in msg and "inception-2015-12-05.pt" in msg


def test_inception_file_with_wrong_sha_names_both_hashes(tmp_path, tiny_inception):
    path, sha = tiny_inception
    pinned = "f" * 64
    with pytest.raises(InceptionWeightsMismatch) as err:
        load_extractor(_inception_spec(tmp_path, path, pinned), "m1", _never)
    assert sha in str(err.value) and pinned in str(err.value)


def test_remote_uri_is_refused_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="nothing is downloaded"):
        load_extractor(_inception_spec(tmp_path, "https://example.com/inception.pt", "a" * 64), "m1", _never)
