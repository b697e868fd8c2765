"""Batch norm over the global batch on CPU process groups (gloo), where torch's SyncBatchNorm refuses.

Under DDP every rank normalises its own slice of the batch, so G's output depends on the worker
count. torch.nn.SyncBatchNorm fixes that on GPUs only; this is the same maths for any backend, with
one collective per layer per forward and one per backward:

  forward   all-reduce [Σx, Σx², n] per channel → μ = Σx/N, σ² = Σx²/N − μ² (biased, as BN normalises)
            x̂ = (x − μ)/√(σ² + ε),  y = γ·x̂ + β;  running stats get μ and the unbiased σ²·N/(N−1)
  backward  all-reduce [Σdy, Σdy·x̂] → dx = γ/√(σ²+ε) · (dy − mean(dy) − x̂·mean(dy·x̂))   (means over N)
            dγ = Σ_local dy·x̂, dβ = Σ_local dy: DDP averages those over ranks like any parameter grad.

dx is the gradient of the *sum* of the ranks' losses; DDP divides every parameter gradient by the
world size afterwards, which turns it into the gradient of their mean, the same as one rank with the
whole batch. The ranks' sums are combined in float64 from each rank's own two-pass moments, so the
E[x²] − μ² form loses nothing in float32 runs.

Cost: the count rides in the moments' collective, every per-channel number stays a tensor (no
.item(), no host sync: on a GPU nothing waits for the collective's result), each is computed once,
and a forward that a backward will follow keeps x̂ (instead of x, the same size) so the backward does
not rebuild it; under no_grad (D's fakes) the forward is one pass and keeps nothing.

In eval mode (the EMA copy, sampling, export) the layer is a plain BatchNorm2d on its running stats:
no collective. The state dict is BatchNorm2d's, so checkpoints load into plain generators. Double
backward through G's batch norm is not supported (no penalty in this project differentiates G twice).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

AllReduce = Callable[[Tensor], Tensor]  # sums a tensor over ranks, returns the sum (a new tensor)


def _channel_view(t: Tensor, like: Tensor) -> Tensor:
    return t.view(1, -1, *([1] * (like.dim() - 2))).to(like.dtype)


class _GlobalBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, all_reduce: AllReduce, keep_xhat: bool):
        c = x.shape[1]
        # Local moments (biased variance) with BatchNorm's own two-pass kernel, then the sums the ranks
        # add up, in float64: Σx = n·m and Σx² = n·(v + m²). The global σ² = Σx²/N − μ² then cancels
        # in float64, and the local v carries float32's own precision, as a plain BatchNorm's would.
        # (torch.var_mean gives the same numbers but ~4× slower on CPU over dims (0, 2, 3).)
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
        count = x.numel() // c
        # One collective for the three moments: [Σx (c), Σx² (c), n (1)]. The count goes in as a fill,
        # not torch.tensor(n), and n stays a tensor from here on: nothing waits on the host.
        mean64 = mean.double()
        local = torch.cat([mean64 * count, (var.double() + mean64.square()) * count, mean64.new_full((1,), count)])
        total = all_reduce(local)
        n = total[2 * c]
        g_mean = total[:c] / n
        g_var = (total[c : 2 * c] / n - g_mean.square()).clamp_min_(0)
        # Per-channel vectors computed once, in float64, and cast once to the activations' dtype.
        invstd = torch.rsqrt(g_var + eps)
        shift = -g_mean * invstd  # x̂ = x·invstd + shift
        # The elementwise passes are a multiply and an in-place add: on CPU, addcmul with a broadcast
        # per-channel first operand runs ~3× slower than the pair (torch 2.13, measured).
        if keep_xhat:
            # A backward will follow: keep x̂ instead of x (same size), so backward need not rebuild it;
            # y = γ·x̂ + β. Two passes here, none in backward: as many as saving x and rebuilding x̂.
            xhat = (x * _channel_view(invstd, x)).add_(_channel_view(shift, x))
            y = (xhat * _channel_view(weight, x)).add_(_channel_view(bias, x))
            ctx.save_for_backward(xhat, weight, invstd, n)
        else:
            # No backward (G under no_grad making D's fakes): y = x·(γ·invstd) + (β + γ·shift), one pass.
            w64 = weight.double()
            y = (x * _channel_view(w64 * invstd, x)).add_(_channel_view(bias.double() + w64 * shift, x))
        ctx.all_reduce = all_reduce
        ctx.mark_non_differentiable(g_mean, g_var, n)
        return y, g_mean, g_var, n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _mean, _var, _n):
        xhat, weight, invstd, n = ctx.saved_tensors
        c = xhat.shape[1]
        dims = [0, *range(2, xhat.dim())]
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * xhat).sum(dims)
        total = ctx.all_reduce(torch.cat([sum_dy, sum_dy_xhat]).double())  # every rank runs this backward
        k = weight.double() * invstd
        mean_dy, mean_dy_xhat = total[:c] / n, total[c:] / n
        # dx = k·(dy − mean(dy) − x̂·mean(dy·x̂)): one product into a new tensor, then in place.
        dx = (dy * _channel_view(k, dy)).sub_(_channel_view(k * mean_dy, dy))
        dx.addcmul_(xhat, _channel_view(-k * mean_dy_xhat, dy))
        return dx, sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None, None, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the batch summed over all ranks."""

    def __init__(self, num_features: int, *, all_reduce: AllReduce, **kwargs):
        super().__init__(num_features, **kwargs)
        self.all_reduce = all_reduce

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.track_running_stats:
            return super().forward(x)
        weight = self.weight if self.affine else x.new_ones(self.num_features)
        bias = self.bias if self.affine else x.new_zeros(self.num_features)
        # Inside Function.forward grad mode is off and needs_input_grad ignores no_grad: ask here.
        keep_xhat = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad)
        y, mean, var, n = _GlobalBatchNorm.apply(x, weight, bias, self.eps, self.all_reduce, keep_xhat)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # As BatchNorm: momentum None means a cumulative average over the batches seen.
                f = 1.0 / self.num_batches_tracked.double() if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - f).add_((mean * f).to(self.running_mean.dtype))
                self.running_var.mul_(1 - f).add_((unbiased * f).to(self.running_var.dtype))
        return y


def with_global_batch_norm(module: nn.Module, all_reduce: AllReduce) -> nn.Module:
    """Every BatchNorm2d in `module` replaced (in place) by a GlobalBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            ref = child.weight if child.affine else child.running_mean
            new = GlobalBatchNorm2d(
                child.num_features, all_reduce=all_reduce, eps=child.eps, momentum=child.momentum,
                affine=child.affine, track_running_stats=child.track_running_stats,
                device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            with_global_batch_norm(child, all_reduce)
    return module
