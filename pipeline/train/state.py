"""The full training state ⇄ a checkpoint directory: the one place the checkpoint schema is written and read.

One `state.pt` (tensors and plain Python values only, loaded with weights_only=True: no pickled code)
plus a readable `meta.json`. What the next step depends on, and where it is:
- shared by all ranks (rank 0 writes it): G, D, both optimizers, the EMA copy, ADA's p, LeCam's anchors;
- per rank (gathered to rank 0 at every checkpoint): the data stream's position, the samples this
  rank consumed, torch's global RNG (D's dropout) and CUDA's where there is a GPU, ADA's observations
  of a part-done interval;
- a function of the step alone, so the step restores it: every strength schedule, the lazy
  regularization phase, the EMA's ramp-up, and z, ε and augmentation (seeded by (seed, step, stream),
  see step.py).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.train.step import GanParts, unwrap

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"
SCHEMA = 2  # 1: before per-rank RNG states (data positions and samples_seen at the top level)


@dataclass
class RankState:
    """What one rank alone knows, saved for it and given back to the same rank on resume."""

    data_position: dict | None
    consumed: int  # samples this rank took from its stream, over the whole run
    torch_rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None
    ada: dict | None = None

    @classmethod
    def capture(cls, *, data_position: dict, consumed: int, parts: GanParts, device: torch.device) -> "RankState":
        return cls(
            data_position=data_position,
            consumed=consumed,
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            ada=parts.ada.rank_state() if parts.ada is not None else None,
        )

    def restore_rng(self, device: torch.device) -> None:
        """Put this rank's random state back: call last before the first step, after anything
        (building, the scorer) that may draw from the global RNG."""
        if self.torch_rng is not None:
            torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.cuda_rng, device)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainState:
    step: int
    G: dict
    D: dict
    g_opt: dict
    d_opt: dict
    ema: dict | None = None
    ada: dict | None = None
    lecam: dict | None = None
    ranks: list[RankState] = field(default_factory=list)  # index = rank

    @property
    def samples_seen(self) -> int:
        return sum(r.consumed for r in self.ranks)

    # -- parts ⇄ state ---------------------------------------------------------------------------
    @classmethod
    def capture(cls, parts: GanParts, *, step: int, ranks: list[RankState]) -> "TrainState":
        def optional(name: str):
            part = getattr(parts, name)
            return None if part is None else part.state_dict()

        return cls(
            step=step, G=unwrap(parts.G).state_dict(), D=unwrap(parts.D).state_dict(),
            g_opt=parts.g_opt.state_dict(), d_opt=parts.d_opt.state_dict(),
            ema=optional("ema"), ada=optional("ada"), lecam=optional("lecam"), ranks=ranks,
        )

    def restore(self, parts: GanParts, *, device: torch.device) -> None:
        """Models, optimizers and shared regularizer state (rank-local state: `for_rank`)."""
        unwrap(parts.G).load_state_dict(self.G)
        unwrap(parts.D).load_state_dict(self.D)
        parts.g_opt.load_state_dict(self.g_opt)
        parts.d_opt.load_state_dict(self.d_opt)
        if parts.ema is not None and self.ema is not None:
            parts.ema.load_state_dict(self.ema)
        if parts.ada is not None and self.ada is not None:
            parts.ada.load_state_dict(self.ada)
        if parts.lecam is not None and self.lecam is not None:
            parts.lecam.load_state_dict(self.lecam, device=device)

    def for_rank(self, rank: int, world: int) -> RankState:
        """This rank's saved state. Same world size: exactly what it saved. Another world size: the
        data position of the nearest rank (the stream then starts a fresh epoch), rank 0 carries the
        whole sample count, no RNG or ADA partials (the run continues, not bit-exactly)."""
        if len(self.ranks) == world:
            return self.ranks[rank]
        log.warning("checkpoint written by %d ranks, resuming on %d: random streams restart", len(self.ranks), world)
        nearest = self.ranks[min(rank, len(self.ranks) - 1)] if self.ranks else RankState(None, 0)
        return RankState(data_position=nearest.data_position, consumed=self.samples_seen if rank == 0 else 0)

    def apply_rank(self, rank_state: RankState, parts: GanParts, *, device: torch.device) -> None:
        if parts.ada is not None and rank_state.ada is not None:
            parts.ada.load_rank_state(rank_state.ada, device=device)

    # -- state ⇄ directory -----------------------------------------------------------------------
    def save(self, directory: str | Path, meta: dict[str, Any]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {k: v for k, v in self.__dict__.items() if k != "ranks"}
        payload.update(schema=SCHEMA, ranks=[r.as_dict() for r in self.ranks])
        tmp = directory / (STATE_FILE + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, directory / STATE_FILE)  # never a half-written state.pt
        meta = {**meta, "step": self.step, "samples_seen": self.samples_seen, "schema": SCHEMA}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> "TrainState":
        raw = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        if raw.get("schema", 1) == 1:
            # Schema 1 kept one data position per rank and a global sample count, and no RNG.
            positions = raw.pop("data_positions", None) or []
            seen = raw.pop("samples_seen", 0)
            raw["ranks"] = [RankState(p, seen if i == 0 else 0) for i, p in enumerate(positions)]
        else:
            raw["ranks"] = [RankState(**r) for r in raw["ranks"]]
        raw.pop("schema", None)
        return cls(**raw)


def load_meta(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())
