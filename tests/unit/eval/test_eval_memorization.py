"""Memorization share and precision/recall through GeneratorScorer on real data: scikit-learn's digits
packed into shards, the classifier extractor (trained once per module, few steps), 500 samples.

"Generators" here are functions of z that return chosen images, so the right answer is known:
replaying training images is copying; replaying held-out images is producing new real images.
"""
import pytest
import torch

from pipeline.data.config import DataSpec
from pipeline.data.manifest import load_manifest
from pipeline.data.pack import pack
from pipeline.eval.config import EvalSpec, evaluator_key
from pipeline.eval.memorization import MEMORIZATION_QUANTILE, heldout_mask
from pipeline.eval.scorer import GeneratorScorer, read_real_set

Z_DIM = 8


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    pack("digits", str(tmp / "shards"), shard_size=500, resolution=32, progress=False)
    data = DataSpec(root=str(tmp / "shards"), resolution=32)
    spec = EvalSpec(num_samples=500, classifier_steps=50, cache_dir=str(tmp / "cache"))
    _, sha = load_manifest(data.root)
    images, _, keys = read_real_set(data)
    held = heldout_mask(keys, spec.heldout_fraction)
    return GeneratorScorer(spec, data, sha), images[~held], images[held], spec, sha


def replay(pool):
    """Each sample is an image of `pool`, picked by the latent (deterministic per z)."""
    def g(z):
        seed = int(z[0, 0].abs().mul(1e6))
        return pool[torch.randint(len(pool), (len(z),), generator=torch.Generator().manual_seed(seed))]
    return g


def test_replaying_training_images_is_flagged_as_memorization(digits):
    scorer, train, _, spec, sha = digits
    r = scorer(replay(train), Z_DIM)
    assert r["memorization"] > 0.95  # every sample is a training image: d = 0 < τ
    assert r["precision"] > 0.95
    assert r["num_real"] == 1797 and r["num_heldout"] == 1797 - len(train)
    assert r["key"] == evaluator_key(spec, sha, 1797)


def test_new_real_images_are_not_flagged(digits):
    scorer, _, heldout, _, _ = digits
    r = scorer(replay(heldout), Z_DIM)
    # Held-out images are real and absent from the training set: they sit at the 5% baseline
    # by construction of τ, far below copying.
    assert r["memorization"] < 3 * MEMORIZATION_QUANTILE
    assert r["precision"] > 0.95


def test_collapsed_generator_has_high_precision_and_low_recall(digits):
    scorer, train, _, _, _ = digits
    diverse = scorer(replay(train), Z_DIM)
    collapsed = scorer(lambda z: train[:1].expand(len(z), -1, -1, -1), Z_DIM)  # one image, always
    assert collapsed["precision"] > 0.95
    assert collapsed["recall"] < 0.05 < 0.5 < diverse["recall"]


def test_noise_generator_has_low_precision(digits):
    scorer, train, _, _, _ = digits
    noise = scorer(lambda z: torch.rand(len(z), 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1, Z_DIM)
    assert noise["precision"] < 0.05 and noise["recall"] < 0.05 and noise["memorization"] < 0.05
