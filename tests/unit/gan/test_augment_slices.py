"""Augmentation drawn for the global batch and sliced by rank: two ranks' halves, augmented apart,
are the whole batch augmented at once (what keeps DiffAugment and ADA worker-count invariant)."""
import pytest
import torch

from pipeline.gan.augment import SliceOfGlobalBatch, augment_with_probability, diff_augment


def _draws(rank: int, world: int) -> SliceOfGlobalBatch:
    return SliceOfGlobalBatch(torch.Generator().manual_seed(7), rank=rank, world=world)


@pytest.mark.parametrize("augment", [
    lambda x, g: diff_augment(x, ("color", "translation", "cutout"), generator=g),
    lambda x, g: augment_with_probability(x, 0.5, ("color", "translation", "cutout"), generator=g),
], ids=["diffaugment", "ada"])
def test_two_ranks_augment_like_one(augment):
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    whole = augment(x, _draws(0, 1))
    halves = torch.cat([augment(x[r * 4 : (r + 1) * 4], _draws(r, 2)) for r in range(2)])
    torch.testing.assert_close(halves, whole, rtol=0, atol=0)
    assert not torch.equal(whole, x)  # it did augment


def test_per_rank_generators_would_not():
    """The former design (one generator per rank) gives other numbers: the slicing is what matters."""
    x = torch.rand(8, 3, 16, 16)
    whole = diff_augment(x, ("color",), generator=torch.Generator().manual_seed(7))
    halves = torch.cat([diff_augment(x[r * 4 : (r + 1) * 4], ("color",), generator=torch.Generator().manual_seed(7 + r)) for r in range(2)])
    assert not torch.allclose(halves, whole)
