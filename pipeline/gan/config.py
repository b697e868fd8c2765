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


ModelKind = Literal["dcgan", "resnet", "r3gan"]


class ModelSpec(Frozen):
    kind: ModelKind = "dcgan"
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
    # Class-conditional G (a class embedding beside z) and projection D, for every kind. The class
    # count comes from the data's manifest: the driver fills `num_classes` before any worker starts.
    conditional: bool = False
    num_classes: int | None = Field(None, ge=2, description="set from the manifest when conditional")
    class_names: tuple[str, ...] | None = Field(None, description="set from the manifest when conditional")
    # λ, how much the class steers G and D (gan/conditioning.py): a number or a schedule, e.g.
    # {kind: linear, start: 0, end: 1, steps: 1000} to start unconditional and bring the classes in.
    class_strength: "Strength" = 1.0
    # r3gan: channels per resolution from 4 px up to data.resolution, or a named preset of them
    # (pipeline/gan/r3gan.py PRESETS: cifar10 = the paper's 32 px network, ffhq, narrow for CPUs).
    preset: Literal["cifar10", "ffhq", "narrow"] | None = None
    widths: tuple[Annotated[int, Field(ge=8)], ...] | None = None
    blocks_per_stage: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _r3gan_fields(self) -> "ModelSpec":
        if self.kind == "r3gan" and (self.preset is None) == (self.widths is None):
            raise ValueError("model.kind r3gan: give exactly one of `preset` (cifar10, ffhq, narrow) or `widths`")
        if self.kind != "r3gan" and (self.preset is not None or self.widths is not None):
            raise ValueError(f"model.preset and model.widths are r3gan's; model.kind {self.kind} uses g_width/d_width")
        if self.num_classes is not None and not self.conditional:
            raise ValueError("model.num_classes is set but model.conditional is false")
        if self.class_strength != 1.0 and not self.conditional:
            raise ValueError("model.class_strength is set but model.conditional is false")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"model.class_names has {len(self.class_names)} names for num_classes {self.num_classes}")
        return self

    @property
    def classes(self) -> int:
        """The class count the networks are built for: 0 when unconditional."""
        return (self.num_classes or 0) if self.conditional else 0


# The smallest image side each model is built for (a power of two at least this): the DCGAN reshapes
# to 8×8 and needs one stride-2 stage after it; SNGAN's ResNet D downsamples once before its 8×8
# blocks; R3GAN's G has at least one upsampling stage after its 4×4 basis.
MIN_RESOLUTION = {"dcgan": 16, "resnet": 16, "r3gan": 8}


def check_resolution(kind: str, resolution: int) -> None:
    """The model kind can be built at this image side; raise ValueError naming both fields."""
    smallest = MIN_RESOLUTION[kind]
    if resolution < smallest or resolution & (resolution - 1):
        raise ValueError(
            f"data.resolution {resolution}: model.kind {kind} needs a power of two >= {smallest}"
            f" ({', '.join(str(smallest << i) for i in range(4))}, ...)"
        )


def check_model(model: "ModelSpec", resolution: int) -> None:
    """Everything about the model that depends on the image side; ValueError naming the fields."""
    check_resolution(model.kind, resolution)
    if model.kind == "r3gan":
        from pipeline.gan.r3gan import widths_for

        widths_for(resolution, preset=model.preset, widths=model.widths)


class LossSpec(Frozen):
    # relativistic: RpGAN, R3GAN's loss (pipeline/gan/losses.py); pair it with r1 and r2.
    kind: Literal["nonsaturating", "wasserstein", "hinge", "least_squares", "relativistic"] = "nonsaturating"


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
Beta = Annotated[float, Field(ge=0, lt=1)]


class AdamSpec(Frozen):
    """Adam's learning rate and betas; `lr` and β2 may follow a schedule, as R3GAN's recipe has them
    (lr 2e-4 → 5e-5 and β2 0.9 → 0.99 on the same cosine burn-in as γ), logged per step."""

    lr: Union[Annotated[float, Field(gt=0)], Schedule] = 2e-4
    betas: tuple[Beta, Union[Beta, Schedule]] = (0.5, 0.999)

    @model_validator(mode="after")
    def _schedules_in_range(self) -> "AdamSpec":
        ends = lambda s: (s.start, s.start if s.end is None else s.end)  # noqa: E731
        if isinstance(self.lr, Schedule) and min(ends(self.lr)) <= 0:
            raise ValueError("lr: a schedule's start and end must be > 0")
        b2 = self.betas[1]
        if isinstance(b2, Schedule) and max(ends(b2)) >= 1:
            raise ValueError("betas[1]: a schedule's start and end must be < 1")
        return self


class OptimSpec(Frozen):
    g: AdamSpec = AdamSpec()
    d: AdamSpec = AdamSpec()


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
