"""Regularizers: weight penalties, gradient penalties, and the optimizer arithmetic of lazy ones.

Weight penalties (l1, l2, orthogonal) read the weights of Conv*/ConvTranspose*/Linear layers only:
biases and normalization layers are left alone, as weight decay in the GAN papers does. A layer under
spectral norm (`torch.nn.utils.parametrizations.spectral_norm`) has `weight = W / σ(W)` computed on the
fly from the trainable `parametrizations.weight.original`; we penalise that original W. It is the tensor
the optimizer updates, and the normalised weight has σ = 1 by construction, so a penalty on it cannot
shrink the scale it is meant to shrink and would push gradients through the power-iteration estimate.
(The legacy `torch.nn.utils.spectral_norm` hook keeps its original in `weight_orig`; we read that too.)

Gradient penalties (R1, R2, WGAN-GP) differentiate D with respect to its *input*:
  - `x = samples.detach().requires_grad_(True)`, `logits = d(x)`, then
    `torch.autograd.grad(logits.sum(), x, create_graph=True)`. Summing the logits gives every sample's
    own gradient in one pass because D treats samples independently (true for convs, ReLUs, linear
    layers, instance norm; *not* for batch norm in train mode or minibatch-stddev layers, whose
    per-sample gradients then mix the batch).
  - create_graph=True keeps the graph of the gradient, so the penalty can itself be back-propagated to
    D's parameters by an ordinary `loss.backward()`. Never call `backward(create_graph=True)` through a
    DDP output: DDP does not support it (pytorch#63812). `autograd.grad` with `inputs=x` accumulates
    nothing into parameter `.grad`s, so DDP's all-reduce hooks stay quiet until that later backward.

Why callers add `logits * 0` to the penalty loss under DDP:
  DDP all-reduces gradients in buckets and a bucket is sent only when every parameter in it has
  reported a gradient in this backward. A gradient penalty does not reach every parameter: D's last
  bias shifts the logit by a constant, so ∂D/∂x (and so the penalty) does not depend on it. Without the
  zero term that bias never reports, its bucket never fills, and the backward hangs (or, with
  find_unused_parameters, the ranks pay for a graph search each step). `(logits * 0 + penalty)` puts
  every parameter of D in the graph with a zero gradient, so every bucket fires and the sum is
  unchanged. stylegan2-ada-pytorch does the same (`loss_Dr1 ... (real_logits * 0 + loss_Dr1)`).
  That is why the gradient penalties here return the logits alongside the penalty.

Why the lazy gain `every` multiplies a lazy penalty (StyleGAN2, Karras et al. 2020, §3.1):
  Run the penalty on one step in `every` and the regularizer acts `every` times less often; scaling it
  by `every` keeps its average strength per image the same:  every × (γ/2)·R1 once per `every` steps
  ≈ (γ/2)·R1 every step. The extra optimizer step that the separate penalty pass takes is then paid
  back by `lazy_adam` below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

# Layers whose `weight` is a learned linear map. `_ConvNd` covers Conv1/2/3d and ConvTranspose1/2/3d.
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def _trainable_weight(layer: nn.Module) -> Tensor:
    """The weight the optimizer updates: the pre-spectral-norm original when there is one."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    if hasattr(layer, "weight_orig"):  # legacy torch.nn.utils.spectral_norm hook
        return layer.weight_orig
    return layer.weight


def _weighted_layers(module: nn.Module) -> Iterator[nn.Module]:
    # module.modules() yields each layer once even when it is shared, so nothing is counted twice.
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            yield layer


def _zero_like_params(module: nn.Module) -> Tensor:
    p = next(module.parameters(), None)
    return torch.zeros((), device=p.device, dtype=p.dtype) if p is not None else torch.zeros(())


def l1_penalty(module: nn.Module) -> Tensor:
    """Σ|w| over the weights of the conv/linear layers in `module` (no biases, no norm layers)."""
    total = _zero_like_params(module)
    for layer in _weighted_layers(module):
        total = total + _trainable_weight(layer).abs().sum()
    return total


def l2_penalty(module: nn.Module) -> Tensor:
    """Σw² over the same weights as l1_penalty. (No ½: the caller's coefficient is the whole factor.)"""
    total = _zero_like_params(module)
    for layer in _weighted_layers(module):
        total = total + _trainable_weight(layer).square().sum()
    return total


def orthogonal_penalty(module: nn.Module) -> Tensor:
    """BigGAN's orthogonal regularization (Brock et al. 2019, §3.1): Σ_W ||W Wᵀ ⊙ (1 − I)||²_F.

    W is each conv/linear weight reshaped to (out_channels, −1), so row i is the whole filter that
    produces output channel i and W Wᵀ holds the dot products between filters. Only the off-diagonal
    entries are penalised: filters are pushed towards orthogonality without fixing their norms, which
    the paper found keeps G amenable to the truncation trick while constraining it less than full
    orthogonality. ConvTranspose stores its weight as (in, out/groups, k…), so it is transposed first.
    """
    total = _zero_like_params(module)
    for layer in _weighted_layers(module):
        w = _trainable_weight(layer)
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            w = w.transpose(0, 1)
        w = w.reshape(w.shape[0], -1)
        gram = w @ w.t()
        off_diagonal = gram * (1.0 - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype))
        total = total + off_diagonal.square().sum()
    return total


def _input_gradient(d: Callable[[Tensor], Tensor], samples: Tensor) -> tuple[Tensor, Tensor]:
    """(∂ Σ D(x) / ∂x with its graph kept, logits) at x = samples, detached from whatever made them."""
    x = samples.detach().requires_grad_(True)
    logits = d(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad, logits


def r1_penalty(d: Callable[[Tensor], Tensor], real: Tensor) -> tuple[Tensor, Tensor]:
    """R1 (Mescheder et al. 2018): E_batch ||∇_x D(x)||² on real samples, and D's logits on them.

    The squared norm is summed over every pixel and channel, then averaged over the batch. The caller
    multiplies by γ/2 (and by the lazy gain), and adds `logits * 0` under DDP (module docstring).
    """
    grad, logits = _input_gradient(d, real)
    return grad.square().flatten(1).sum(1).mean(), logits


def r2_penalty(d: Callable[[Tensor], Tensor], fake: Tensor) -> tuple[Tensor, Tensor]:
    """R2: the same as R1 on generated samples (pass them detached or not; they are detached here)."""
    grad, logits = _input_gradient(d, fake)
    return grad.square().flatten(1).sum(1).mean(), logits


def zero_centered_penalties(logits: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """E_batch ||∇_x D(x)||² for each tensor in `inputs` (leaves with requires_grad, from which D computed
    `logits`, e.g. reals and fakes concatenated into one D pass), from one autograd.grad call, graph kept.

    R1 and R2 then ride along D's main pass (R3GAN's way: its Trainer.py differentiates the logits it
    also puts in the loss) instead of costing a D pass each. The logits are in the loss, so every D
    parameter reports a gradient and no `logits * 0` term is needed.
    """
    grads = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return [g.square().flatten(1).sum(1).mean() for g in grads]


def wgan_gp_penalty(
    d: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """WGAN-GP (Gulrajani et al. 2017): E[(||∇D(x̂)||₂ − 1)²] and D's logits on x̂.

    x̂ = ε·real + (1 − ε)·fake with one ε ~ U(0, 1) per sample, a random point on the segment between
    a real and a fake sample, where the optimal critic has unit gradient norm. `generator` makes ε
    reproducible; or pass `eps` (one per sample), as the training loop does so that ε does not depend
    on how the global batch is split over ranks. The caller multiplies by λ (10 in the paper).
    The norm is sqrt(Σg² + 1e-12): the plain norm has an undefined (NaN) gradient where g = 0, which a
    dead-ReLU critic can reach; the 1e-12 moves the value by ~1e-12/(2||g||), far below float32 noise.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must match for WGAN-GP")
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    # Drawn on the generator's device, then moved: a CPU generator also drives CUDA samples.
    draw_on = generator.device if generator is not None else real.device
    if eps is None:
        eps = torch.rand(eps_shape, generator=generator, device=draw_on, dtype=real.dtype)
    eps = eps.reshape(eps_shape).to(real.device, real.dtype)
    mixed = eps * real.detach() + (1.0 - eps) * fake.detach()
    grad, logits = _input_gradient(d, mixed)
    norm = (grad.square().flatten(1).sum(1) + 1e-12).sqrt()
    return (norm - 1.0).square().mean(), logits


def lazy_adam(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """Adam's (lr, betas) for an optimizer that also takes a lazy-regularization step every `every` steps.

    With a separate penalty pass every k steps the optimizer steps k + 1 times per k minibatches.
    StyleGAN2 (Appendix B; stylegan2-ada `mb_ratio`) keeps the per-image dynamics with c = k/(k+1):
      lr → lr·c          (the same total movement over k + 1 steps instead of k)
      β → β^c            (the moving averages keep their memory measured in minibatches: over the
                          k + 1 steps they decay by (β^c)^(k+1) = β^k, as k plain steps would)
    e.g. k = 16: c = 16/17 ≈ 0.941, lr 0.0025 → 0.002353, β₂ 0.99 → 0.99^0.941 ≈ 0.99059.
    every = 1 means no lazy regularization: the penalty is added to the ordinary loss in the same
    optimizer step (there is no extra step to pay for), so lr and betas come back unchanged.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if every == 1:
        return lr, (betas[0], betas[1])
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
