"""One GAN step: D's main phase, D's lazy reg phase when due, G's phase, then the EMA and ADA.

Under DDP (two separately wrapped modules, G and D):
- D's phase makes fakes with the *unwrapped* G under no_grad: no backward will follow, so G's
  reducer must not expect one. Reals and fakes go through D in one forward (D has no batch norm,
  so concatenating changes nothing but the cost). Augmentation is drawn for reals and fakes apart.
- G's phase runs the *unwrapped* D with its parameters frozen: the gradient reaches the fakes and G's
  DDP reducer all-reduces G's gradients; D's reducer is not involved and D gets no stale gradients.
- Gradient penalties take ∂D/∂x with autograd.grad(create_graph=True) and an ordinary backward
  (see pipeline/gan/penalties.py for why the `logits * 0` term is there).
Every rank runs the same phases in the same order (the schedule depends on the step alone), so the
collectives line up: G's batch norm, when synced over ranks (train/build.py), runs its collective in
both phases, D's fakes included.

Randomness, and why the result does not depend on the worker count or on a resume:
- z, WGAN-GP's ε and every augmentation draw come from a generator reseeded by (seed, step, stream)
  on the batch's device (no host → device copy per step), drawn for the whole global batch and
  sliced by rank: 1 × B and 2 × B/2 see the same numbers, a resumed run the same again, and there
  is no generator state to checkpoint.
- D's dropout draws from torch's global RNG, per rank by nature; the checkpoint keeps that state
  for every rank (train/state.py).

Class conditioning: when the batch comes with labels (model.conditional), G makes each fake for the
class of the real at the same position, and D judges every image with its class. The fakes' classes
then follow the data's class frequencies, a relativistic pair (real_i, fake_i) compares images of one
class, and no extra random draw is needed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.gan.augment import SliceOfGlobalBatch, augment_with_probability, diff_augment
from pipeline.gan.conditioning import set_class_strength
from pipeline.gan.config import Schedule
from pipeline.gan.lecam import lecam_penalty
from pipeline.gan.losses import PAIRED, d_loss, g_loss
from pipeline.gan.penalties import r1_penalty, r2_penalty, wgan_gp_penalty, zero_centered_penalties
from pipeline.train.optimizers import OptimizerSchedule
from pipeline.train.regularization import Regularization, strength

AllReduce = Callable[[Tensor], Tensor]


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


@dataclass
class GanParts:
    G: nn.Module                       # DDP-wrapped on several workers
    D: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    ema: object | None = None          # pipeline.gan.ema.EMA
    ada: object | None = None          # pipeline.gan.augment.AdaController
    lecam: object | None = None        # pipeline.gan.lecam.LeCamAnchors


# Streams of (seed, step)-seeded draws; each call site has its own, so adding one never shifts another.
Z_D, Z_G, WGAN_EPS, AUG_REAL, AUG_FAKE, AUG_G, AUG_R1, AUG_R2, AUG_GP, AUG_G_REAL = range(10)


class GanStep:
    def __init__(
        self,
        parts: GanParts,
        *,
        loss: str,
        regs: Regularization,
        global_batch: int,
        z_dim: int,
        all_reduce: AllReduce | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        rank: int = 0,
        seed: int = 0,
        optim=None,
        class_strength=1.0,
    ):
        self.p, self.loss, self.regs = parts, loss, regs
        self.global_batch, self.z_dim = global_batch, z_dim
        self.all_reduce = all_reduce
        self.autocast = autocast
        self.every = regs.lazy_every
        self.rank, self.seed = rank, seed
        self._generators: dict[torch.device, torch.Generator] = {}
        # Resolved once, not per step: which augmentation (if any) every image D sees goes through.
        self._diffaugment, self._ada = regs.get("diffaugment"), regs.get("adaptive_augment")
        self._lecam = regs.get("lecam")
        # R1/R2 every step (not lazy) are taken from D's main pass: one D pass instead of three.
        self._fused = tuple(r for r in regs.gradient_penalties if r.kind in ("r1", "r2")) if self.every == 1 else ()
        self._fused_kinds = {r.kind for r in self._fused}
        # Scheduled learning rates and β2 (optim: pipeline.gan.config.OptimSpec; None: as built).
        self.optim_schedule = OptimizerSchedule(optim, lazy_every=self.every) if optim is not None else None
        # λ of a conditional model (model.class_strength: a number or a schedule), set every step.
        self.class_strength = class_strength

    def _rng(self, step: int, stream: int, device: torch.device) -> torch.Generator:
        """The generator of (seed, step, stream), on `device`: reseeding is host-side, no sync."""
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device].manual_seed((self.seed * 1_000_003 + step) * 16 + stream)

    def _global_draw(self, step: int, stream: int, n: int, *shape: int, normal: bool, device=None) -> Tensor:
        """This rank's n rows of random numbers drawn for the whole global batch, seeded by (seed, step,
        stream): the same numbers whatever the worker count (1 × B and 2 × B/2 see the same z), and the
        same again on a resumed run."""
        device = torch.device("cpu") if device is None else torch.device(device)
        draw = torch.randn if normal else torch.rand
        full = draw(self.global_batch, *shape, generator=self._rng(step, stream, device), device=device)
        return full[self.rank * n : (self.rank + 1) * n]

    # -- augmentation, applied to every image D sees (reals and fakes alike) --------------------------
    def augment(self, x: Tensor, step: int, stream: int) -> Tensor:
        if self._diffaugment is None and (self._ada is None or self.p.ada is None):
            return x
        world = self.global_batch // len(x)
        draws = SliceOfGlobalBatch(self._rng(step, stream, x.device), rank=self.rank, world=world)
        if self._diffaugment is not None:
            return diff_augment(x, self._diffaugment.policies, generator=draws)
        return augment_with_probability(x, self.p.ada.p, self._ada.policies, generator=draws)

    def _d(self, step: int, stream: int, labels: Tensor | None) -> Callable[[Tensor], Tensor]:
        """D after this call site's augmentation, judging each image with its class (when conditional):
        what the gradient penalties differentiate."""
        return lambda x: self.p.D(self.augment(x, step, stream), labels)

    def __call__(self, step: int, real: Tensor, labels: Tensor | None = None) -> dict[str, Tensor | float]:
        """One step on this rank's reals; `labels` (int64, one per real) for a conditional model."""
        n, device = len(real), real.device
        if self.global_batch % n:
            raise ValueError(f"a batch of {n} does not divide the global batch {self.global_batch}")
        z_d = self._global_draw(step, Z_D, n, self.z_dim, normal=True, device=device).to(real.dtype)
        z_g = self._global_draw(step, Z_G, n, self.z_dim, normal=True, device=device).to(real.dtype)
        stats: dict[str, Tensor | float] = {}
        if self.optim_schedule is not None:
            stats.update(self.optim_schedule.apply(step, g_opt=self.p.g_opt, d_opt=self.p.d_opt))
        if labels is not None:
            stats.update(self._set_class_strength(step))
        fake = self.d_main(step, real, z_d, stats, labels)
        if self.every > 1 and step % self.every == 0:
            self.d_reg(step, real, fake, stats, labels)
        self.g_main(step, z_g, stats, real, labels)
        if self.p.ema is not None:
            stats["ema/beta"] = self.p.ema.update(self.p.G, step=step, batch_size=self.global_batch)
        if self.p.ada is not None and (step + 1) % self.p.ada.interval == 0:
            # r_t over the last `interval` steps of every rank → the same p everywhere.
            p, rt = self.p.ada.update(self.p.ada.interval * self.global_batch, all_reduce=self.all_reduce)
            stats.update({"ada/p": p, "ada/rt": rt})
        return stats

    def _set_class_strength(self, step: int) -> dict[str, float]:
        value = strength(self.class_strength, step)
        set_class_strength(value, unwrap(self.p.G), unwrap(self.p.D))  # the EMA copies G's buffers
        return {"cond/class_strength": value} if isinstance(self.class_strength, Schedule) else {}

    def d_main(self, step: int, real: Tensor, z: Tensor, stats: dict, labels: Tensor | None = None) -> Tensor:
        with torch.no_grad(), self.autocast():
            fake = unwrap(self.p.G)(z, labels).to(real.dtype)  # back from bf16 when autocasting
        # Leaves to differentiate D's main pass against, when R1/R2 ride along (see _fused).
        real_in = real.detach().requires_grad_(True) if "r1" in self._fused_kinds else real
        fake_in = fake.detach().requires_grad_(True) if "r2" in self._fused_kinds else fake
        with self.autocast():
            seen = torch.cat([self.augment(real_in, step, AUG_REAL), self.augment(fake_in, step, AUG_FAKE)])
            both = None if labels is None else torch.cat([labels, labels])
            logits = self.p.D(seen, both).to(real.dtype)
        real_logits, fake_logits = logits[: len(real)], logits[len(real):]
        adv = d_loss(self.loss, real_logits, fake_logits)
        loss = adv
        penalty, logged = self.regs.weight_penalty("discriminator", unwrap(self.p.D), step)
        loss = loss + penalty
        stats.update(logged)
        lecam = self._lecam
        if lecam is not None and self.p.lecam is not None:
            self.p.lecam.update(real_logits.detach(), fake_logits.detach(), all_reduce=self.all_reduce)
            w = strength(lecam.weight, step)
            lc = lecam_penalty(real_logits, fake_logits, self.p.lecam.anchor_real, self.p.lecam.anchor_fake)
            loss = loss + w * lc
            stats.update({"reg/lecam": lc.detach(), "reg/lecam_weight": w})
        if self.p.ada is not None:
            self.p.ada.observe(real_logits.detach())
        if self.every == 1:  # penalties ride along in the main step: no extra optimizer step
            loss = loss + self._fused_penalties(step, logits, real_in, fake_in, stats)
            for r in self.regs.gradient_penalties:
                if r not in self._fused:
                    loss = loss + self._gradient_penalty(r, step, real, fake, labels, gain=1, stats=stats)
        self.p.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.p.d_opt.step()
        stats.update(
            {
                "loss/d": adv.detach(),
                "loss/d_total": loss.detach(),
                "d/real_logit": real_logits.detach().mean(),
                "d/fake_logit": fake_logits.detach().mean(),
            }
        )
        return fake

    def _fused_penalties(self, step: int, logits: Tensor, real_in: Tensor, fake_in: Tensor, stats: dict) -> Tensor | float:
        """γ/2·R1 and γ/2·R2 from the gradient of D's main pass w.r.t. its (pre-augmentation) inputs."""
        if not self._fused:
            return 0.0
        inputs = [real_in if r.kind == "r1" else fake_in for r in self._fused]
        total: Tensor | float = 0.0
        for r, pen in zip(self._fused, zero_centered_penalties(logits, inputs)):
            w = strength(r.weight, step)
            stats[f"reg/{r.kind}"], stats[f"reg/{r.kind}_weight"] = pen.detach(), w
            total = total + pen.to(real_in.dtype) * (w / 2)  # γ/2·E‖∇D‖², as in _gradient_penalty
        return total

    def d_reg(self, step: int, real: Tensor, fake: Tensor, stats: dict, labels: Tensor | None = None) -> None:
        """Lazy regularization: the penalties alone, scaled by the gain `every`, in their own D step
        (the optimizer's lr and betas were adjusted for it with lazy_adam)."""
        loss: Tensor | float = 0.0
        for r in self.regs.gradient_penalties:
            loss = loss + self._gradient_penalty(r, step, real, fake, labels, gain=self.every, stats=stats)
        self.p.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.p.d_opt.step()

    def _gradient_penalty(self, r, step: int, real: Tensor, fake: Tensor, labels: Tensor | None, *, gain: int,
                          stats: dict) -> Tensor:
        w = strength(r.weight, step)
        with self.autocast():
            if r.kind == "r1":
                pen, logits = r1_penalty(self._d(step, AUG_R1, labels), real)
                scale = w / 2  # R1 is conventionally γ/2·E‖∇D‖²
            elif r.kind == "r2":
                pen, logits = r2_penalty(self._d(step, AUG_R2, labels), fake)
                scale = w / 2
            else:  # interpolates between a real and the fake of the same class
                eps = self._global_draw(step, WGAN_EPS, len(real), normal=False, device=real.device)
                pen, logits = wgan_gp_penalty(self._d(step, AUG_GP, labels), real, fake, eps=eps)
                scale = w
        stats[f"reg/{r.kind}"] = pen.detach()
        stats[f"reg/{r.kind}_weight"] = w
        # `logits * 0`: puts every D parameter in the graph so DDP's buckets all fire (penalties.py).
        return pen.to(real.dtype) * (scale * gain) + logits.to(real.dtype).sum() * 0

    def g_main(self, step: int, z: Tensor, stats: dict, real: Tensor | None = None, labels: Tensor | None = None) -> None:
        d_plain = unwrap(self.p.D)
        d_plain.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.p.G(z, labels)
                logits = d_plain(self.augment(fake, step, AUG_G), labels).to(z.dtype)
                real_logits = None
                if self.loss in PAIRED:  # the pair's other half: a value, D is frozen and reals need no grad
                    real_logits = d_plain(self.augment(real, step, AUG_G_REAL), labels).to(z.dtype)
            adv = g_loss(self.loss, logits, real_logits)
            penalty, logged = self.regs.weight_penalty("generator", unwrap(self.p.G), step)
            loss = adv + penalty
            self.p.g_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.p.g_opt.step()
        finally:
            d_plain.requires_grad_(True)
        stats.update(logged)
        stats["loss/g"] = adv.detach()
