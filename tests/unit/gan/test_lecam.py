"""LeCam penalty by hand; anchors as EMAs that agree across ranks."""

import pytest
import torch

from pipeline.gan.lecam import LeCamAnchors, lecam_penalty

torch.set_num_threads(1)


def test_penalty_by_hand():
    real = torch.tensor([1.0, -2.0, 3.0])
    fake = torch.tensor([0.0, 2.0])
    # anchor_fake = 0.5: relu(real - 0.5) = [0.5, 0, 2.5] -> squares mean (0.25 + 6.25) / 3
    # anchor_real = 1.0: relu(1 - fake) = [1, 0]       -> squares mean 1 / 2
    expected = 6.5 / 3 + 0.5
    assert lecam_penalty(real, fake, torch.tensor(1.0), torch.tensor(0.5)).item() == pytest.approx(expected)
    assert lecam_penalty(real, fake, 1.0, 0.5).item() == pytest.approx(expected)


def test_penalty_gradient_reaches_logits_not_anchors():
    real = torch.tensor([2.0], requires_grad=True)
    fake = torch.tensor([-1.0], requires_grad=True)
    anchor = torch.tensor(0.0, requires_grad=True)
    lecam_penalty(real, fake, anchor, anchor).backward()
    assert real.grad.item() == pytest.approx(4.0)  # d/dr (r - 0)² at r = 2
    assert fake.grad.item() == pytest.approx(-2.0)  # d/df (0 - f)² at f = -1
    assert anchor.grad is None


def test_anchors_start_at_the_first_means_then_follow_an_ema():
    anchors = LeCamAnchors(decay=0.9)
    anchors.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0]))
    assert (anchors.anchor_real.item(), anchors.anchor_fake.item()) == (2.0, -2.0)
    anchors.update(torch.tensor([12.0]), torch.tensor([8.0, 8.0]))
    assert anchors.anchor_real.item() == pytest.approx(0.9 * 2 + 0.1 * 12)  # 3.0
    assert anchors.anchor_fake.item() == pytest.approx(0.9 * -2 + 0.1 * 8)  # -1.0
    restored = LeCamAnchors()
    restored.load_state_dict(anchors.state_dict())
    assert (restored.decay, restored.anchor_real.item(), restored.anchor_fake.item()) == pytest.approx((0.9, 3.0, -1.0))


def test_ranks_agree_through_all_reduce():
    real = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([5.0])]
    fake = [torch.tensor([0.0]), torch.tensor([-4.0, -4.0, -4.0])]
    sent = []

    def all_reduce(t):  # stands in for a sum over both ranks
        sent.append(t)
        return sum(ts for ts in STATS)

    STATS = [
        torch.tensor([3.0, 3.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([5.0, 1.0, -12.0, 3.0], dtype=torch.float64),
    ]
    results = []
    for r, f in zip(real, fake):
        a = LeCamAnchors()
        a.update(r, f, all_reduce=all_reduce)
        results.append((a.anchor_real.item(), a.anchor_fake.item()))
    torch.testing.assert_close(sent[0], STATS[0])
    torch.testing.assert_close(sent[1], STATS[1])
    assert results[0] == results[1] == pytest.approx((8 / 4, -12 / 4))  # global-batch means
