"""DiffAugment transforms, ADA's per-sample probability, and the AdaController's p."""

import threading

import pytest
import torch

from pipeline.gan.augment import (
    POLICIES,
    AdaController,
    augment_with_probability,
    cutout,
    diff_augment,
    translation,
)

torch.set_num_threads(1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=seeded(123)) * 2 - 1


@pytest.mark.parametrize("policies", [("color",), ("translation",), ("cutout",), POLICIES])
def test_shape_dtype_kept_and_images_changed(policies):
    x = images()
    out = diff_augment(x, policies, generator=seeded())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_same_generator_seed_same_augmentation():
    x = images()
    torch.testing.assert_close(diff_augment(x, POLICIES, generator=seeded(5)), diff_augment(x, POLICIES, generator=seeded(5)))


def test_gradcheck_through_all_policies():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    # A fresh, equally seeded generator per call: gradcheck sees one fixed random transform.
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, POLICIES, generator=seeded(1)), (x,))


def test_translation_is_a_zero_filled_shift_of_at_most_an_eighth():
    x = images(n=16, size=16)
    out = translation(x, seeded(2))
    shifts = []
    for n in range(x.shape[0]):
        found = None
        for dy in range(-2, 3):  # 16 / 8 = 2 pixels at most
            for dx in range(-2, 3):
                expected = torch.zeros_like(x[n])
                src = x[n][:, max(0, -dy): 16 - max(0, dy), max(0, -dx): 16 - max(0, dx)]
                expected[:, max(0, dy): 16 - max(0, -dy), max(0, dx): 16 - max(0, -dx)] = src
                if torch.equal(out[n], expected):
                    found = (dy, dx)
        assert found is not None, f"sample {n} is not a zero-filled shift"
        shifts.append(found)
    assert len(set(shifts)) > 1 and any(s != (0, 0) for s in shifts)


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    x = torch.ones(16, 3, 32, 32)
    out = cutout(x, seeded(3))
    holes = out[:, 0] == 0
    assert torch.equal(holes.unsqueeze(1).expand_as(out), out == 0)  # same hole in every channel
    per_sample = holes.flatten(1).sum(1)
    assert (per_sample > 0).all() and (per_sample <= 16 * 16).all()
    assert (per_sample == 16 * 16).any()  # some square lies fully inside the image
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_unknown_policy_and_bare_string_are_refused():
    with pytest.raises(ValueError):
        diff_augment(images(), ("rotation",))
    with pytest.raises(TypeError):
        diff_augment(images(), "color")


def test_probability_zero_is_identity_and_one_changes_every_sample():
    x = images(n=16)
    assert augment_with_probability(x, 0.0, POLICIES, generator=seeded()) is x
    out = augment_with_probability(x, 1.0, ("color",), generator=seeded())
    assert all(not torch.equal(out[n], x[n]) for n in range(16))


def test_probability_half_leaves_some_samples_untouched_and_keeps_gradients():
    x = images(n=64).requires_grad_(True)
    out = augment_with_probability(x, 0.5, ("color",), generator=seeded(4))
    untouched = [torch.equal(out[n], x[n]) for n in range(64)]
    # Each of the 3 colour transforms skips a sample with probability ½: ~64/8 = 8 pass untouched.
    assert 0 < sum(untouched) < 64
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ada_p_rises_when_rt_above_target_and_falls_below():
    ctrl = AdaController(target=0.6, adjust_images=1000, interval=4)
    ctrl.observe(torch.tensor([1.0, 2.0, -1.0, 3.0]))  # r_t = (3 - 1) / 4 = 0.5 ... then more:
    ctrl.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]))  # r_t = (2 + 4) / 8 = 0.75 > 0.6
    p, r_t = ctrl.update(100)
    assert r_t == pytest.approx(0.75) and p == pytest.approx(0.1)  # 0 + 100 / 1000
    ctrl.observe(torch.tensor([-1.0, 1.0]))  # r_t = 0 < 0.6
    p, r_t = ctrl.update(50)
    assert r_t == 0.0 and p == pytest.approx(0.05)
    ctrl.observe(torch.tensor([-1.0]))
    assert ctrl.update(1000)[0] == 0.0  # clamped at 0
    ctrl.observe(torch.tensor([1.0]))
    assert ctrl.update(5000)[0] == 1.0  # clamped at 1


def test_ada_update_without_observations_keeps_p():
    ctrl = AdaController(p=0.3)
    p, r_t = ctrl.update(256)
    assert p == 0.3 and r_t != r_t  # NaN


def test_ada_ranks_agree_through_all_reduce():
    # Rank 0 sees a D that wins (r = 1), rank 1 one that loses (r = -1, twice the samples):
    # globally r_t = (4 - 8) / 12 < 0.6, so both must lower p by the same amount.
    controllers = [AdaController(target=0.6, adjust_images=1000, p=0.5) for _ in range(2)]
    controllers[0].observe(torch.ones(4))
    controllers[1].observe(-torch.ones(8))
    barrier, sent, results = threading.Barrier(2), [None, None], [None, None]

    def run(rank: int) -> None:
        def all_reduce(t: torch.Tensor) -> torch.Tensor:  # a sum over both ranks, like dist.all_reduce
            sent[rank] = t.clone()
            barrier.wait()
            return sent[0] + sent[1]

        results[rank] = controllers[rank].update(200, all_reduce)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert results[0] == results[1] == pytest.approx((0.5 - 0.2, -4 / 12))
    # Without the collective each rank would have moved its own way.
    alone = AdaController(target=0.6, adjust_images=1000, p=0.5)
    alone.observe(torch.ones(4))
    assert alone.update(200)[0] == pytest.approx(0.7)


def test_ada_interval_and_state():
    ctrl = AdaController(interval=4, p=0.25)
    assert [ctrl.is_due(s) for s in range(1, 9)] == [False, False, False, True] * 2
    other = AdaController()
    other.load_state_dict(ctrl.state_dict())
    assert other.p == 0.25
