import pytest
import torch

from pipeline.eval.config import EvalSpec, evaluator_key, extractor_key
from pipeline.eval.evaluate import evaluate

KEYS = [f"{i:08d}" for i in range(300)]  # toy_data's WebDataset keys: they decide the held-out split


@pytest.fixture
def spec(tmp_path):
    # 20% held out: 48 of the 300 toy keys (10% would leave 15, under memorization.MIN_HELDOUT)
    return EvalSpec(num_samples=300, classifier_steps=60, classifier_width=8, heldout_fraction=0.2, cache_dir=str(tmp_path))


def _replay(images):
    """A 'generator' that returns real images: perfect samples of the data distribution."""
    seen = []

    def g(z):
        seen.append(z)
        return images[torch.randint(len(images), (len(z),), generator=torch.Generator().manual_seed(len(seen)))]

    g.seen = seen
    return g


def _noise(z):
    return torch.rand(len(z), 3, 8, 8) * 2 - 1


def test_real_images_score_far_better_than_noise(spec, toy_data, tmp_path):
    images, labels = toy_data
    good = evaluate(_replay(images), 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128)
    bad = evaluate(_noise, 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128)
    assert good["fd"] * 20 < bad["fd"]
    assert abs(good["kid"]) * 20 < bad["kid"]
    assert good["precision"] > 0.9 and bad["precision"] < 0.1
    assert {k: good[k] for k in ("num_samples", "num_real", "extractor", "key")} == \
        {"num_samples": 300, "num_real": 300, "extractor": "classifier", "key": evaluator_key(spec, "m1", 300)}
    cached = tmp_path / extractor_key(spec, "m1")  # real-side stats cached under the extractor key
    assert (cached / "reference-300.npz").is_file() and (cached / f"manifold-{good['key']}.npz").is_file()


def test_latents_are_seeded_float32_batches(spec, toy_data):
    images, labels = toy_data
    g1, g2 = _replay(images), _replay(images)
    r1 = evaluate(g1, 16, images, labels, spec, "m1", real_keys=KEYS, seed=3, batch_size=128)
    r2 = evaluate(g2, 16, images, labels, spec, "m1", real_keys=KEYS, seed=3, batch_size=128)
    assert [tuple(z.shape) for z in g1.seen] == [(128, 16), (128, 16), (44, 16)]
    assert all(z.dtype == torch.float32 for z in g1.seen)
    assert all(torch.equal(a, b) for a, b in zip(g1.seen, g2.seen))
    assert r1 == r2
    g3 = _replay(images)
    evaluate(g3, 16, images, labels, spec, "m1", real_keys=KEYS, seed=4, batch_size=128)
    assert not torch.equal(g3.seen[0], g1.seen[0])


def test_evaluation_leaves_the_callers_rng_alone_cache_cold_or_warm(spec, toy_data):
    """Training evaluates between steps: if loading the cached extractor drew from the global RNG
    (a fresh module's initial weights) and training it did not, a run's dropout masks after its first
    eval would depend on whether the eval cache was warm."""
    images, labels = toy_data
    for cache in ("cold", "warm"):
        torch.manual_seed(7)
        evaluate(_replay(images), 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128)
        after = torch.rand(3)
        torch.manual_seed(7)
        assert torch.equal(after, torch.rand(3)), f"evaluate() moved the global RNG (cache {cache})"


def test_a_split_too_small_for_memorization_still_scores_the_rest(spec, toy_data, caplog):
    images, labels = toy_data
    small = spec.model_copy(update={"heldout_fraction": 0.1})  # 15 of the 300 toy keys: under MIN_HELDOUT
    r = evaluate(_replay(images), 16, images, labels, small, "m1", real_keys=KEYS, batch_size=128)
    assert r["memorization"] is None and "heldout_fraction=0.1 gives 15 held-out images" in r["memorization_note"]
    assert r["num_heldout"] == 15 and r["precision"] > 0.9 and r["fd"] >= 0
    assert "memorization share not computed" in caplog.text
    ok = evaluate(_replay(images), 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128)
    assert ok["memorization"] > 0.5 and ok["memorization_note"] is None  # replayed real images: copies


def test_a_warm_cache_scores_classes_without_extracting_the_reals_again(spec, toy_data, monkeypatch):
    """Per-class FD compares with the reals' features: a warm cache holds them (reference.real_manifold),
    so the second evaluation never runs the extractor over every real image again."""
    from pipeline.eval.extractors import Extractor

    images, labels = toy_data
    real_passes = []  # one entry per extractor call: was it over the real images?
    extract = Extractor.__call__

    def counting(self, x):
        real_passes.append(x is images)
        return extract(self, x)

    monkeypatch.setattr(Extractor, "__call__", counting)

    def by_class(z, y):  # a conditional "generator": a real image of the asked-for class
        return torch.stack([images[(labels == c).nonzero()[i % 50, 0]] for i, c in enumerate(y.tolist())])

    names = ["a", "b", "c"]
    cold = evaluate(by_class, 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128, class_names=names)
    assert sum(real_passes) == 1  # the cold cache extracts the reals once, for everything real-side
    real_passes.clear()
    warm = evaluate(by_class, 16, images, labels, spec, "m1", real_keys=KEYS, batch_size=128, class_names=names)
    assert sum(real_passes) == 0 and len(real_passes) > 0
    assert warm["per_class"] == cold["per_class"] and warm["accuracy"] == cold["accuracy"] > 0.9
