"""Adversarial losses: D(x) logits in, one scalar (mean over the batch) out.

One place for the GAN objectives, as in stylegan2-ada's `loss.py`. Each pair is written in the form
the papers optimise, so the arithmetic can be checked by hand:

  kind            discriminator loss                      generator loss
  nonsaturating   softplus(-D(x)) + softplus(D(G(z)))     softplus(-D(G(z)))        Goodfellow et al. 2014
  wasserstein     D(G(z)) - D(x)                          -D(G(z))                  Arjovsky et al. 2017
  hinge           relu(1 - D(x)) + relu(1 + D(G(z)))      -D(G(z))                  Lim & Ye 2017, Miyato 2018
  least_squares   ½(D(x) - 1)² + ½ D(G(z))²               ½(D(G(z)) - 1)²           Mao et al. 2017 (a=0, b=1, c=1)
  relativistic    softplus(-(D(x) - D(G(z))))             softplus(-(D(G(z)) - D(x)))   RpGAN (Jolicoeur-Martineau
                                                                                 2019; R3GAN, Huang et al. 2024)

softplus(-l) = -log σ(l) is the binary cross-entropy of a logit against label 1, computed without
overflow; the "non-saturating" generator loss maximises log D(G(z)) instead of minimising
log(1 - D(G(z))), whose gradient vanishes when D confidently rejects the fakes.

The real and fake terms are averaged separately, so the two batches may differ in size, except for
`relativistic`: it scores pairs (real_i, fake_i), so both batches have the same size and the loss is
the mean over pairs of softplus of the pair's logit difference. The pairs are formed within each rank's
batch, and that is the same as one process with the whole batch: rank r holds rows [r·n, (r+1)·n) of
the global batch of reals *and* of z (train/step.py draws z for the global batch and slices it), so the
pairs are the global batch's pairs i ↔ i, split between ranks; each rank's loss is the mean over its n
pairs, and DDP's gradient average over W ranks makes that the mean over all W·n pairs. Any other pairing
would be too: the reals of a batch are an exchangeable draw, so pairing them with fakes by position is
pairing at random. R3GAN pairs the same way (R3GAN/Trainer.py).
With R1 and R2 (R3GAN's γ/2·(R1 + R2) every step) the relativistic loss converges locally (its §3).
The wasserstein loss is only meaningful with a Lipschitz constraint on D (WGAN-GP, see penalties.py).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("nonsaturating", "wasserstein", "hinge", "least_squares", "relativistic")
PAIRED = ("relativistic",)  # losses whose generator side also reads D's logits on the reals


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; expected one of {LOSSES}")


def d_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss for `kind`: mean over real samples plus mean over fake samples."""
    _check(kind)
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "wasserstein":
        return fake_logits.mean() - real_logits.mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "relativistic":
        return F.softplus(-(_paired(real_logits, fake_logits))).mean()
    # least_squares: real targets b = 1, fake targets a = 0.
    return 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean())


def _paired(first: Tensor, second: Tensor) -> Tensor:
    if first.shape != second.shape:
        raise ValueError(f"the relativistic loss pairs reals with fakes: shapes {tuple(first.shape)} and {tuple(second.shape)} differ")
    return first - second


def g_loss(kind: str, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """Generator loss for `kind`, from D's logits on generated samples (and on the paired reals for
    the relativistic loss; no gradient needs to reach D through them)."""
    _check(kind)
    if kind == "relativistic":
        if real_logits is None:
            raise ValueError("the relativistic generator loss needs D's logits on the real batch")
        return F.softplus(-(_paired(fake_logits, real_logits))).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind in ("wasserstein", "hinge"):
        # Hinge trains G with the plain critic value: a hinge on G's side would stop pushing
        # fakes once D scores them above -1 (Lim & Ye 2017; Miyato et al. 2018 do the same).
        return -fake_logits.mean()
    # least_squares: G wants D to output c = 1 on fakes.
    return 0.5 * (fake_logits - 1.0).square().mean()

