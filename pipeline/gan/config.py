"""The job spec's GAN sections: model, loss, optimizers and the regularization catalogue.

Each regularizer is one pydantic model tagged by `kind`; the union is discriminated on it, so an
unknown kind is refused with the list of allowed ones. Strengths are a number or a schedule.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

Target = Literal["generator", "discriminator", "both"]
NonNegative = Annotated[float, Field(ge=0)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Frozen):
    kind: Literal["dcgan", "resnet"] = "dcgan"
    z_dim: int = Field(100, ge=1)
    # Base channel width: the seed's DCGAN is width 64 (G 256→128→64, D 64→128).
    g_width: int = Field(64, ge=1)
    d_width: int = Field(64, ge=1)
    # BatchNorm in G as in the seed.
    g_norm: Literal["batch", "none"] = "batch"
    # G's batch norm uses the statistics of the global batch when there are several workers (SyncBatchNorm
    # on GPU, all-reduced moments on CPU), so the result does not depend on the worker count; false keeps
    # per-rank statistics (one collective less per BN layer and forward, worker-count-dependent maths).
    sync_batch_norm: bool = True
    d_dropout: float = Field(0.3, ge=0, lt=1)


# The smallest image side each model is built for (a power of two at least this): the DCGAN reshapes
# to 8×8 and needs one stride-2 stage after it; SNGAN's ResNet D downsamples once before its 8×8 blocks.
MIN_RESOLUTION = {"dcgan": 16, "resnet": 16}


def check_resolution(kind: str, resolution: int) -> None:
    """The model kind can be built at this image side; raise ValueError naming both fields."""
    smallest = MIN_RESOLUTION[kind]
    if resolution < smallest or resolution & (resolution - 1):
        raise ValueError(
            f"data.resolution {resolution}: model.kind {kind} needs a power of two >= {smallest}"
            f" ({', '.join(str(smallest << i) for i in range(4))}, ...)"
        )


class LossSpec(Frozen):
    kind: Literal["nonsaturating", "wasserstein", "hinge", "least_squares"] = "nonsaturating"


class AdamSpec(Frozen):
    lr: float = Field(2e-4, gt=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.999)


class OptimSpec(Frozen):
    g: AdamSpec = AdamSpec()
    d: AdamSpec = AdamSpec()


class Schedule(Frozen):
    """A strength that moves from `start` to `end` over `steps` steps, after `warmup` steps of ramp-up."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    start: NonNegative
    end: NonNegative | None = None
    steps: int = Field(1, ge=1)
    warmup: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _end_given(self) -> "Schedule":
        if self.kind != "constant" and self.end is None:
            raise ValueError(f"a {self.kind} schedule needs `end`")
        return self


Strength = Union[NonNegative, Schedule]


class WeightPenalty(Frozen):
    weight: Strength = Field(description="λ")
    target: Target = "discriminator"


class L1(WeightPenalty):
    """λ·Σ|w| over the target's conv/linear weights."""

    kind: Literal["l1"]


class L2(WeightPenalty):
    """λ·Σw² over the target's conv/linear weights (the seed's kernel regularizer)."""

    kind: Literal["l2"]


class Orthogonal(WeightPenalty):
    """BigGAN's off-diagonal orthogonality penalty."""

    kind: Literal["orthogonal"]
    target: Target = "generator"


class GradientPenalty(Frozen):
    # `gamma` is accepted as the conventional name of R1/R2's strength.
    weight: Strength = Field(validation_alias=AliasChoices("weight", "gamma"))
    every: int = Field(1, ge=1, description="lazy regularization interval (stylegan2: 16)")


class R1(GradientPenalty):
    """γ/2·E‖∇D(x)‖² on real data."""

    kind: Literal["r1"]


class R2(GradientPenalty):
    """γ/2·E‖∇D(G(z))‖² on generated data."""

    kind: Literal["r2"]


class WganGP(GradientPenalty):
    """λ·E(‖∇D(x̂)‖₂ − 1)² on real/fake interpolates."""

    kind: Literal["wgan_gp"]
    weight: Strength = Field(10.0, validation_alias=AliasChoices("weight", "lambda"))
    allow_mismatch: bool = False


class SpectralNorm(Frozen):
    kind: Literal["spectral_norm"]
    target: Target = "discriminator"


class EMA(Frozen):
    """EMA of G: a fixed `beta`, or stylegan2-ada's half-life in images with optional ramp-up."""

    kind: Literal["ema"]
    beta: float | None = Field(None, gt=0, lt=1)
    half_life_images: float | None = Field(None, gt=0)
    rampup: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_rate(self) -> "EMA":
        if (self.beta is None) == (self.half_life_images is None):
            raise ValueError("give exactly one of `beta` or `half_life_images`")
        return self


AugmentPolicy = Literal["color", "translation", "cutout"]


class DiffAugment(Frozen):
    kind: Literal["diffaugment"]
    policies: tuple[AugmentPolicy, ...] = ("color", "translation", "cutout")


class AdaptiveAugment(Frozen):
    """ADA: p follows r_t = E[sign(D(real))] toward `rt_target`."""

    kind: Literal["adaptive_augment"]
    policies: tuple[AugmentPolicy, ...] = ("color", "translation", "cutout")
    rt_target: float = Field(0.6, gt=0, lt=1)
    interval: int = Field(4, ge=1)
    adjust_images: int = Field(500_000, ge=1)


class LeCam(Frozen):
    kind: Literal["lecam"]
    weight: Strength = 0.3
    decay: float = Field(0.99, gt=0, lt=1)


Regularizer = Annotated[
    Union[L1, L2, Orthogonal, R1, R2, WganGP, SpectralNorm, EMA, DiffAugment, AdaptiveAugment, LeCam],
    Field(discriminator="kind"),
]
GRADIENT_PENALTIES = (R1, R2, WganGP)
WEIGHT_PENALTIES = (L1, L2, Orthogonal)


def check_regularization(regs: tuple, loss_kind: str) -> None:
    """Cross-entry rules; raise ValueError with the reason."""
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(regs):
        # Weight penalties may repeat on different targets; everything else is one entry per kind.
        slot = (r.kind, getattr(r, "target", "")) if isinstance(r, WEIGHT_PENALTIES) else (r.kind, "")
        if slot in seen:
            raise ValueError(f"regularization[{i}]: a second `{r.kind}` entry (first at [{seen[slot]}])")
        seen[slot] = i
        if isinstance(r, WganGP) and loss_kind != "wasserstein" and not r.allow_mismatch:
            raise ValueError(
                f"regularization[{i}]: wgan_gp with loss `{loss_kind}`; use loss `wasserstein`"
                " or set allow_mismatch: true"
            )
    kinds = {r.kind for r in regs}
    if {"diffaugment", "adaptive_augment"} <= kinds:
        raise ValueError("regularization: choose one of diffaugment or adaptive_augment, not both")
    # Lazy penalties share D's reg phase and its Adam adjustment, so they must share one interval.
    lazy = {r.every for r in regs if isinstance(r, GRADIENT_PENALTIES) and r.every > 1}
    if len(lazy) > 1:
        raise ValueError(f"regularization: lazy gradient penalties must share one `every`, got {sorted(lazy)}")
