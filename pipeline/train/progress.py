"""The driver's progress bar, fed by rank 0 through a Ray queue (step, losses, samples/s)."""
from __future__ import annotations

import queue as std_queue
import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def follow(progress_queue, *, total: int, alive: Callable[[], bool], enabled: bool = True) -> None:
    if not enabled or progress_queue is None:
        while alive():
            time.sleep(0.5)
        return
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=total, losses="starting Ray workers…", rate="")
        while alive() or not progress_queue.empty():
            try:
                m = progress_queue.get(timeout=0.5)
            except (std_queue.Empty, Exception):  # ray.util.queue.Empty subclasses Exception
                continue
            losses = f"D {m.get('loss/d', float('nan')):.3f}  G {m.get('loss/g', float('nan')):.3f}"
            bar.update(task, completed=m["step"], losses=losses, rate=f"{m.get('samples_per_s', 0):.0f} img/s")
