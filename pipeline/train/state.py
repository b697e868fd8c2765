"""The full training state ⇄ a checkpoint directory.

One `state.pt` (tensors and plain Python values only, loaded with weights_only=True: no pickled
code) plus a readable `meta.json`. Data positions are kept per rank so a resumed run continues each
rank's stream where it stopped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def save_state(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)  # never a half-written state.pt
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_state(directory: str | Path) -> dict[str, Any]:
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def load_meta(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())
