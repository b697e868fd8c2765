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
whole batch. Sums are accumulated in float64, so the E[x²] − μ² form loses nothing in float32 runs.

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
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, all_reduce: AllReduce):
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        local = torch.cat([
            x.sum(dims, dtype=torch.float64),
            (x * x).sum(dims, dtype=torch.float64),
            # The count as a fill, not torch.tensor(n): a host → device copy would sync on GPUs.
            x.new_full((1,), x.numel() // c, dtype=torch.float64),
        ])
        total = all_reduce(local)
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        xhat = (x - _channel_view(mean, x)) * _channel_view(invstd, x)
        y = xhat * _channel_view(weight, x) + _channel_view(bias, x)
        ctx.save_for_backward(xhat, weight, invstd, n)
        ctx.all_reduce = all_reduce
        ctx.mark_non_differentiable(mean, var, n)
        return y, mean, var, n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _mean, _var, _n):
        xhat, weight, invstd, n = ctx.saved_tensors
        c = xhat.shape[1]
        dims = [0, *range(2, xhat.dim())]
        local = torch.cat([dy.sum(dims, dtype=torch.float64), (dy * xhat).sum(dims, dtype=torch.float64)])
        total = ctx.all_reduce(local)  # every rank runs this backward: the collective lines up
        mean_dy, mean_dy_xhat = total[:c] / n, total[c:] / n
        dx = (dy - _channel_view(mean_dy, dy) - xhat * _channel_view(mean_dy_xhat, dy)) * _channel_view(weight * invstd, dy)
        return dx, local[c:].to(weight.dtype), local[:c].to(weight.dtype), None, None


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
