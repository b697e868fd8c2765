"""The driver's progress display, fed by rank 0 through a Ray queue at each log step (step, losses,
samples/s): a rich bar on a terminal, one plain line per log step elsewhere (Ray job logs, CI,
`ganpipe logs --follow`), where a bar would print nothing useful until the end."""
from __future__ import annotations

import queue as std_queue
import sys
import time
from typing import Callable, TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def follow(progress_queue, *, total: int, alive: Callable[[], bool], enabled: bool = True, plain: bool | None = None,
           out: TextIO | None = None) -> None:
    """Show rank 0's reports until the run ends. `plain`: None picks by whether `out` (stdout) is a terminal."""
    if not enabled or progress_queue is None:
        while alive():
            time.sleep(0.5)
        return
    out = out or sys.stdout
    if plain is None:
        plain = not out.isatty()
    line = PlainLine(total, out) if plain else None
    if line is not None:
        for m in _drain(progress_queue, alive):
            line.show(m)
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
        for m in _drain(progress_queue, alive):
            bar.update(task, completed=m["step"], losses=_losses(m), rate=f"{m.get('samples_per_s', 0):.0f} img/s")


def _drain(progress_queue, alive: Callable[[], bool]):
    while alive() or not progress_queue.empty():
        try:
            yield progress_queue.get(timeout=0.5)
        except (std_queue.Empty, Exception):  # ray.util.queue.Empty subclasses Exception
            continue


def _losses(m: dict) -> str:
    return f"D {m.get('loss/d', float('nan')):.3f}  G {m.get('loss/g', float('nan')):.3f}"


class PlainLine:
    """`step 120/1500 (8%)  D 1.234  G 0.987  410 img/s  elapsed 0:00:31  ETA 0:05:57`, flushed at once.

    The ETA extrapolates the step rate seen since the first report (not since start-up, which
    includes starting the workers and would overstate the remaining time)."""

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self.total, self.out, self.clock = total, out, clock
        self.start = clock()
        self.first: tuple[float, int] | None = None  # (time, step) of the first report

    def show(self, m: dict) -> str:
        now, step = self.clock(), int(m["step"])
        if self.first is None:
            self.first = (now, step)
        t0, s0 = self.first
        eta = "?" if step <= s0 else _hms((self.total - step) * (now - t0) / (step - s0))
        text = (f"step {step}/{self.total} ({100 * step // max(self.total, 1)}%)  {_losses(m)}  "
                f"{m.get('samples_per_s', 0):.0f} img/s  elapsed {_hms(now - self.start)}  ETA {eta}")
        print(text, file=self.out, flush=True)
        return text


def _hms(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
