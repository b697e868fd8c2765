import pytest
import torch

from pipeline.eval.classifier import features, from_checkpoint, to_checkpoint, train_classifier


def _train(images, labels, seed=0):
    return train_classifier(images, labels, steps=60, width=8, seed=seed)


def test_learns_a_separable_set_fast(toy_data):
    images, labels = toy_data
    model = _train(images, labels)  # ~0.2 s on one thread
    assert model.report["num_heldout"] == 30
    assert model.report["heldout_accuracy"] > 0.9
    # And the features separate the classes too: class means are far apart relative to the spread.
    f = features(model, images)
    assert f.shape == (300, 128)
    means = torch.stack([f[labels == k].mean(0) for k in range(3)])
    assert torch.cdist(means, means).fill_diagonal_(float("inf")).min() > f[labels == 0].std(0).mean()


def test_deterministic_for_a_seed_and_leaves_global_rng_alone(toy_data):
    images, labels = toy_data
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = _train(images, labels, seed=7)
    assert torch.rand(1) == before  # weights were drawn in a forked RNG
    b, c = _train(images, labels, seed=7), _train(images, labels, seed=8)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.head.weight, c.head.weight)


def test_features_have_unit_mean_square_on_real_data_and_accept_other_sizes(toy_data):
    images, labels = toy_data
    model = _train(images, labels)
    f = features(model, images)
    assert f.pow(2).mean().item() == pytest.approx(1.0, rel=0.2)
    big = torch.nn.functional.interpolate(images[:5], size=16)
    assert features(model, big).shape == (5, 128)  # resized to the training size


def test_checkpoint_round_trip_is_weights_only(tmp_path, toy_data):
    images, labels = toy_data
    model = _train(images, labels)
    torch.save(to_checkpoint(model), tmp_path / "c.pt")
    loaded = from_checkpoint(torch.load(tmp_path / "c.pt", weights_only=True))
    assert torch.equal(features(loaded, images[:20]), features(model, images[:20]))
    assert loaded.report == model.report


def test_arbitrary_label_values_and_single_class_refused(make_blobs):
    images, labels = make_blobs(60, classes=2)
    model = train_classifier(images, labels * 5 + 3, steps=5, width=4, seed=0)
    assert model.report["classes"] == [3, 8]
    with pytest.raises(ValueError, match="2 distinct"):
        train_classifier(images, torch.zeros(60, dtype=torch.long), steps=1, width=4, seed=0)



def test_training_works_inside_a_callers_no_grad_block(toy_data):
    """Training scores the EMA generator under no_grad, and the first score trains the extractor."""
    import torch as _torch

    from pipeline.eval.classifier import train_classifier as _train

    images, labels = toy_data
    with _torch.no_grad():
        model = _train(images, labels, steps=60, width=8, seed=0)
    assert model.report["heldout_accuracy"] > 0.9
