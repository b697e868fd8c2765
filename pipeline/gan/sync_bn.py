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

In eval mode (the EMA copy, sampling, export) the layer is a plain BatchNorm2d on its running stats:
no collective. The state dict is BatchNorm2d's, so checkpoints load into plain generators. Double
backward through G's batch norm is not supported (no penalty in this project differentiates G twice).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

AllReduce = Callable[[Tensor], Tensor]  # sums a tensor over ranks, returns the sum (a new tensor)


def _channel_view(t: Tensor, like: Tensor) -> Tensor:
    return t.view(1, -1, *([1] * (like.dim() - 2))).to(like.dtype)


class _GlobalBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, all_reduce: AllReduce):
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # Local moments with torch's own (two-pass) kernel, then the sums the ranks add up, in float64:
        # Σx = n·m and Σx² = n·(v + m²). The global σ² = Σx²/N − μ² then cancels in float64, and the
        # local v carries float32's own precision, as a plain BatchNorm's would.
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        count = x.numel() // c
        local = torch.cat([
            mean.double() * count,
            (var.double() + mean.double().square()) * count,
            # The count as a fill, not torch.tensor(n): a host → device copy would sync on GPUs.
            x.new_full((1,), count, dtype=torch.float64),
        ])
        total = all_reduce(local)
        n = total[2 * c]
        g_mean = total[:c] / n
        g_var = (total[c : 2 * c] / n - g_mean.square()).clamp_min(0)
        # The normalisation itself is BatchNorm's fused inference kernel fed the global moments.
        y = F.batch_norm(x, g_mean.to(x.dtype), g_var.to(x.dtype), weight, bias, training=False, eps=eps)
        invstd = torch.rsqrt(g_var + eps).to(x.dtype)
        ctx.save_for_backward(x, weight, g_mean.to(x.dtype), invstd, n)
        ctx.all_reduce = all_reduce
        ctx.mark_non_differentiable(g_mean, g_var, n)
        return y, g_mean, g_var, n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _mean, _var, _n):
        x, weight, mean, invstd, n = ctx.saved_tensors
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # x̂ = x·invstd − μ·invstd, recomputed in one pass (x is saved anyway; x̂ would double the memory).
        xhat = torch.addcmul(_channel_view(-mean * invstd, x), x, _channel_view(invstd, x))
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * xhat).sum(dims)
        total = ctx.all_reduce(torch.cat([sum_dy, sum_dy_xhat]).double())  # every rank runs this backward
        k = weight * invstd
        mean_dy = (total[:c] / n).to(dy.dtype)
        mean_dy_xhat = (total[c:] / n).to(dy.dtype)
        # dx = k·(dy − mean(dy) − x̂·mean(dy·x̂)), written as two fused passes over the activations.
        dx = torch.addcmul(dy * _channel_view(k, dy) - _channel_view(k * mean_dy, dy), xhat, _channel_view(k * mean_dy_xhat, dy), value=-1)
        return dx, sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None, None


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
        y, mean, var, n = _GlobalBatchNorm.apply(x, weight, bias, self.eps, self.all_reduce)
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
