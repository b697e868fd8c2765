"""GlobalBatchNorm2d on two ranks (threads joined by a real exchange of tensors) equals one BatchNorm2d
on the whole batch: outputs, running statistics, input gradients (× world: they are gradients of the
summed rank losses, DDP divides later) and parameter gradients once averaged as DDP averages them."""
import threading

import pytest
import torch
from torch import nn

from pipeline.gan.sync_bn import GlobalBatchNorm2d, with_global_batch_norm


class Exchange:
    """all_reduce(sum) between `n` threads: each posts its tensor, waits, sums everyone's."""

    def __init__(self, n: int):
        self.barrier, self.slots, self.calls = threading.Barrier(n), [None] * n, [0] * n

    def for_rank(self, r: int):
        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            self.calls[r] += 1
            self.slots[r] = t.detach().clone()
            self.barrier.wait()
            out = sum(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out

        return all_reduce


@pytest.mark.parametrize("momentum", [0.1, None])
def test_two_ranks_equal_one_batch(momentum):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 3 + 5  # a large mean: E[x²] − μ² must hold up
    head = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    ref = nn.BatchNorm2d(3, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    ((y_ref * head).pow(2).mean()).backward()

    world, ex = 2, Exchange(2)
    layers = [with_global_batch_norm(nn.Sequential(_copy(ref)), ex.for_rank(r))[0] for r in range(world)]
    for layer in layers:  # the copies start from ref's state before its forward
        layer.running_mean.zero_(), layer.running_var.fill_(1), layer.num_batches_tracked.zero_()
    outs, grads = [None] * world, [None] * world

    def run(r: int) -> None:
        xs = x[r * 4 : (r + 1) * 4].clone().requires_grad_()
        y = layers[r](xs)
        ((y * head).pow(2).mean()).backward()
        outs[r], grads[r] = y.detach(), xs.grad

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
    assert ex.calls == [2, 2]  # one collective in the forward, one in the backward
    assert isinstance(layers[0], GlobalBatchNorm2d)
    torch.testing.assert_close(torch.cat(outs), y_ref.detach())
    torch.testing.assert_close(torch.cat(grads) / world, xr.grad)
    for name in ("weight", "bias"):
        averaged = sum(getattr(l, name).grad for l in layers) / world
        torch.testing.assert_close(averaged, getattr(ref, name).grad)
    for layer in layers:
        torch.testing.assert_close(layer.running_mean, ref.running_mean)
        torch.testing.assert_close(layer.running_var, ref.running_var)
        assert int(layer.num_batches_tracked) == 1


def test_eval_mode_uses_running_stats_without_collectives():
    def refuse(t):
        raise AssertionError("no collective in eval mode")

    bn = with_global_batch_norm(nn.Sequential(nn.BatchNorm2d(2)), refuse).eval()
    x = torch.randn(3, 2, 2, 2)
    torch.testing.assert_close(bn(x), x / (1 + 1e-5) ** 0.5)
    assert set(bn.state_dict()) == set(nn.Sequential(nn.BatchNorm2d(2)).state_dict())  # loads into plain BN


def _copy(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(bn.num_features, momentum=bn.momentum).double()
    new.load_state_dict(bn.state_dict())
    return new


def test_no_grad_forward_matches_and_keeps_nothing():
    """Under no_grad (G making D's fakes) the one-pass forward gives the same output and running stats."""
    torch.manual_seed(1)
    x = torch.randn(6, 4, 3, 3) * 2 + 1
    ex = lambda t: t.detach().clone()  # noqa: E731  (one rank: the sum is the tensor itself)
    with_grad, without = (with_global_batch_norm(nn.Sequential(nn.BatchNorm2d(4)), ex)[0] for _ in range(2))
    with torch.no_grad():
        for bn in (with_grad, without):
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        without.load_state_dict(with_grad.state_dict())
        y_no_grad = without(x)
    y = with_grad(x.clone().requires_grad_())
    assert y.requires_grad and not y_no_grad.requires_grad
    torch.testing.assert_close(y_no_grad, y.detach())
    torch.testing.assert_close(without.running_var, with_grad.running_var)


def test_forward_and_backward_never_read_a_tensor_on_the_host(monkeypatch):
    """No .item(), float(), int(), bool() or .tolist() of a tensor: each would be a host sync on a GPU."""
    bn = with_global_batch_norm(nn.Sequential(nn.BatchNorm2d(3, momentum=None)), lambda t: t.detach().clone())[0]
    x = torch.randn(4, 3, 2, 2, requires_grad=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    bn(x).pow(2).sum().backward()
    with torch.no_grad():
        bn(x)
    monkeypatch.undo()
    assert x.grad is not None and int(bn.num_batches_tracked) == 2
