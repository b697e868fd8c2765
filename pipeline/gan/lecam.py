"""LeCam regularization (Tseng et al., CVPR 2021, "Regularizing GANs under limited data").

D's outputs are pulled towards moving anchors, the EMAs of its mean output on real and on fake data:

    R_LC = E_x[ relu(D(x) − α_F)² ] + E_z[ relu(α_R − D(G(z)))² ]

The first term penalises real logits that rise above the fake anchor α_F, the second fake logits that
fall below the real anchor α_R: D cannot push the two sets of logits apart without bound, which the
paper links to a bounded LeCam divergence and finds keeps D from over-fitting a small training set.
Added to D's loss with weight λ (0.3 in the paper's BigGAN runs; the `relu` follows the authors'
code, which applies the penalty one-sidedly).

Under DDP each rank sees a different batch, so the batch means differ; pass `all_reduce` (a callable
that sums a tensor over ranks and returns the sum) so that every rank's anchors stay identical. The
anchors are detached: they are targets, never differentiated through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def lecam_penalty(
    real_logits: Tensor,
    fake_logits: Tensor,
    anchor_real: Tensor | float,
    anchor_fake: Tensor | float,
) -> Tensor:
    """mean(relu(D(x) − α_F)²) + mean(relu(α_R − D(G(z)))²), differentiable in the logits only."""
    if isinstance(anchor_real, Tensor):
        anchor_real = anchor_real.detach()
    if isinstance(anchor_fake, Tensor):
        anchor_fake = anchor_fake.detach()
    return F.relu(real_logits - anchor_fake).square().mean() + F.relu(anchor_real - fake_logits).square().mean()


class LeCamAnchors:
    """EMAs α_R, α_F of the mean D output on real and on fake samples.

    The first update sets the anchors to the observed means (no bias towards an arbitrary starting
    value); later ones do α ← decay·α + (1 − decay)·mean. With decay 0.99 an anchor averages about the
    last 1/(1 − 0.99) = 100 updates. Call `update` in D's step, before computing `lecam_penalty` with
    `anchors.anchor_real` / `anchors.anchor_fake` (the order of the authors' code).
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.anchor_real: Tensor | None = None
        self.anchor_fake: Tensor | None = None

    @torch.no_grad()
    def update(
        self,
        real_logits: Tensor,
        fake_logits: Tensor,
        *,
        all_reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Fold this step's mean logits into the anchors; returns (α_R, α_F)."""
        # [Σ real, n real, Σ fake, n fake] in float64, summed over ranks in one collective, so the
        # means are over the global batch even when the ranks' batches differ in size. The counts are
        # host numbers written as fills on the logits' device: torch.tensor(n, device=cuda) would be a
        # host → device copy, a sync with the GPU at every step.
        def count(t: Tensor) -> Tensor:
            return torch.full((), float(t.numel()), dtype=torch.float64, device=real_logits.device)

        stats = torch.stack(
            [real_logits.detach().double().sum(), count(real_logits), fake_logits.detach().double().sum(), count(fake_logits)]
        )
        if all_reduce is not None:
            stats = all_reduce(stats)
        mean_real = (stats[0] / stats[1]).to(real_logits.dtype)
        mean_fake = (stats[2] / stats[3]).to(real_logits.dtype)
        if self.anchor_real is None or self.anchor_fake is None:
            self.anchor_real, self.anchor_fake = mean_real, mean_fake
        else:
            self.anchor_real = self.decay * self.anchor_real + (1.0 - self.decay) * mean_real
            self.anchor_fake = self.decay * self.anchor_fake + (1.0 - self.decay) * mean_fake
        return self.anchor_real, self.anchor_fake

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "real": None if self.anchor_real is None else float(self.anchor_real),
            "fake": None if self.anchor_fake is None else float(self.anchor_fake),
        }

    def load_state_dict(self, state: dict[str, Any], *, device: torch.device | str = "cpu") -> None:
        self.decay = state["decay"]
        self.anchor_real = None if state["real"] is None else torch.tensor(state["real"], device=device)
        self.anchor_fake = None if state["fake"] is None else torch.tensor(state["fake"], device=device)
