"""Networks and training parts from the job's model, optimizer and regularization sections. No Ray here:
the Ray worker, the export, the benches and the tests all build through this module.

    G, D = build_networks(spec.model, resolution=spec.data.resolution, regs=regs)
    parts = build_parts(spec.model, spec.optim, resolution=..., regs=regs, device=device,
                        wrap=prepare_model, batch_norm_sync=batch_norm_sync(...))
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipeline.gan.augment import AdaController
from pipeline.gan.config import ModelSpec, OptimSpec
from pipeline.gan.ema import EMA
from pipeline.gan.lecam import LeCamAnchors
from pipeline.gan.models import build_models
from pipeline.train.optimizers import build_adam
from pipeline.train.regularization import Regularization
from pipeline.train.step import GanParts

Wrap = Callable[[nn.Module], nn.Module]


def _with_spectral_norm(module: nn.Module) -> nn.Module:
    from torch.nn.utils.parametrizations import spectral_norm

    for layer in list(module.modules()):
        if isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)):
            spectral_norm(layer)
    return module


def build_networks(model: ModelSpec, *, resolution: int, regs: Regularization) -> tuple[nn.Module, nn.Module]:
    """(G, D) as the job describes them, spectral norm applied where the job asks for it."""
    G, D = build_models(
        kind=model.kind, z_dim=model.z_dim, g_width=model.g_width, d_width=model.d_width,
        resolution=resolution, g_norm=model.g_norm, d_dropout=model.d_dropout, num_classes=model.classes,
        preset=model.preset, widths=model.widths, blocks_per_stage=model.blocks_per_stage,
    )
    sn = regs.spectral_norm_targets()
    G = _with_spectral_norm(G) if "generator" in sn else G
    D = _with_spectral_norm(D) if "discriminator" in sn else D
    return G, D


def batch_norm_sync(model: ModelSpec, *, world_size: int, backend: str, all_reduce) -> Wrap | None:
    """How G's batch norm sees the global batch on `world_size` ranks, or None when it need not:
    torch's SyncBatchNorm on NCCL (it refuses CPU tensors), all-reduced moments on gloo."""
    if world_size == 1 or not model.sync_batch_norm or model.g_norm != "batch":
        return None
    if backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm
    from pipeline.gan.sync_bn import with_global_batch_norm

    return lambda module: with_global_batch_norm(module, all_reduce)


def build_parts(
    model: ModelSpec,
    optim: OptimSpec,
    *,
    resolution: int,
    regs: Regularization,
    device,
    wrap: Wrap | None = None,
    batch_norm_sync: Wrap | None = None,
) -> GanParts:
    """Models, optimizers and stateful regularizers. `wrap` puts a module under DDP (the Ray worker
    passes Ray Train's prepare_model; default: none, for in-process benches and tests)."""
    G, D = build_networks(model, resolution=resolution, regs=regs)
    if batch_norm_sync is not None:
        G = batch_norm_sync(G)  # before the EMA copy and DDP, so both hold the synced layers
    ema_spec = regs.get("ema")
    ema = EMA(G, beta=ema_spec.beta, half_life_images=ema_spec.half_life_images, rampup=ema_spec.rampup) if ema_spec else None
    if ema is not None:
        ema.module.to(device)
    wrap = wrap or (lambda m: m.to(device))
    G, D = wrap(G), wrap(D)
    ada = None
    if (a := regs.get("adaptive_augment")) is not None:
        ada = AdaController(target=a.rt_target, adjust_images=a.adjust_images, interval=a.interval)
    lecam = None
    if (lc := regs.get("lecam")) is not None:
        lecam = LeCamAnchors(decay=lc.decay)
    return GanParts(
        G=G,
        D=D,
        g_opt=build_adam(G, optim.g),
        d_opt=build_adam(D, optim.d, lazy_every=regs.lazy_every),
        ema=ema,
        ada=ada,
        lecam=lecam,
    )
