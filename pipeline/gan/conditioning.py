"""Class conditioning, shared by every model kind: an argument of G and D, never a second network.

  G:  z ─┐
         ├─ concat ─▶ the network's first layer         (z_dim + embed_dim inputs instead of z_dim)
  y ─ embedding (num_classes × embed_dim) ─┘
  D:  x ─▶ the network's features φ(x) (N, F) ─▶ head(φ) + ⟨embed(y), φ⟩    (Miyato & Koyama 2018)

The projection term scores how well the image's features agree with its claimed class; the plain head
keeps the unconditional realism score. With `num_classes = 0` neither adds a parameter: the network
is the unconditional one, state-dict keys included, so older checkpoints still load.

How much the class steers both networks is a strength λ (`model.class_strength`, a number or a
schedule, 1 by default): G sees λ·embed(y) and D adds λ·⟨embed(y), φ⟩. Ramping λ from 0 to 1 starts
training unconditional and brings the classes in gradually, which keeps a conditional G from
collapsing to one image per class early on (Shahbazi et al., "Collapse by Conditioning", ICLR 2022).
λ is a buffer: checkpoints, the EMA copy and the exported generator carry the value training reached.

Labels are int64 class indices. nn.Embedding (not a linear map of a one-hot vector, as R3GAN writes
it: the same function) raises on an index out of range, which is what a served model should do.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ClassInput(nn.Module):
    """z (N, z_dim), labels (N,) → [z, embed(labels)] (N, z_dim + embed_dim); z alone when unconditional."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.num_classes, self.embed_dim = num_classes, embed_dim if num_classes else 0
        if num_classes:
            # R3GAN's scale (its one-hot linear map under MSR init: std 1/√K), so z outweighs the class
            # at the start (‖z‖ ≈ √z_dim, ‖embed‖ ≈ √(embed_dim/K)). At unit variance, the class as
            # loud as z, G learned one image per class and ignored z within it (bench/README.md).
            self.embed = nn.Embedding(num_classes, embed_dim)
            nn.init.normal_(self.embed.weight, std=1 / math.sqrt(num_classes))
            self.register_buffer("strength", torch.ones(()))

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if not self.num_classes:
            return z
        if labels is None:
            raise ValueError("a class-conditional generator needs labels")
        return torch.cat([z, (self.embed(labels) * self.strength).to(z.dtype)], dim=1)


class ClassProjection(nn.Module):
    """The projection term ⟨embed(y), φ⟩ (N, 1) that a conditional D adds to its head's logit.
    D keeps its own `head`, so an unconditional D (no projection) has the state-dict keys it always had."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        # Scaled like R3GAN's (1/√F per entry): the projection starts at the head's magnitude.
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(features))
        self.register_buffer("strength", torch.ones(()))

    def forward(self, h: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ValueError("a projection discriminator needs labels")
        return (self.embed(labels).to(h.dtype) * h).sum(dim=1, keepdim=True) * self.strength.to(h.dtype)


def set_class_strength(value: float, *networks: nn.Module) -> None:
    """Sets λ in every conditional layer of `networks` (G and D); unconditional ones have none."""
    for network in networks:
        for m in network.modules():
            if isinstance(m, (ClassInput, ClassProjection)) and hasattr(m, "strength"):
                m.strength.fill_(value)


def project(logits: Tensor, projection: ClassProjection | None, h: Tensor, labels: Tensor | None) -> Tensor:
    """D's output: the head's logits, plus the projection term when D is conditional."""
    return logits if projection is None else logits + projection(h, labels)
