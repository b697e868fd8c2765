"""The start-up timeline of one training run: wall-clock marks from the driver's process start to
rank 0's first logged step, so a slow start can be split into its parts (driver, Ray, the workers'
imports, the first batch) from the run itself, not guessed.

The driver records its marks and hands them to the workers in WorkerConfig; rank 0 adds its own and
logs all of them once, at its first log step, as MLflow metrics `startup/<mark>_s`: seconds since
the driver's process started. Wall clocks, because the marks come from several processes (and on a
cluster several machines, whose clocks may differ by a little). No import here beyond the standard
library: the CLI and the workers import this first.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

PREFIX = "startup/"


def process_started_at() -> float | None:
    """Wall-clock time at which this process started (Linux /proc, 10 ms resolution), None elsewhere.
    The driver's is the zero of the timeline: it includes the interpreter and the CLI's imports."""
    try:
        # /proc/self/stat: field 22 (index 19 after the ")" that ends the command name) is the start
        # time in clock ticks since boot; /proc/uptime is seconds since boot, so the process's age is
        # their difference.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Timeline:
    """Named wall-clock marks, in the order they were made."""

    def __init__(self, marks: dict[str, float] | None = None):
        self.marks: dict[str, float] = dict(marks or {})

    def mark(self, name: str) -> None:
        """Now, the first time `name` is marked (a loop may mark its first pass only)."""
        self.marks.setdefault(name, time.time())

    def set(self, name: str, at: float | None) -> None:
        """A time taken elsewhere (a process start, an import); None (unknown) records nothing."""
        if at is not None:
            self.marks[name] = at

    def as_metrics(self, zero: str = "driver_process") -> dict[str, float]:
        """`startup/<mark>_s`: seconds from the mark `zero` (empty when it is missing)."""
        if zero not in self.marks:
            return {}
        t0 = self.marks[zero]
        return {f"{PREFIX}{name}_s": round(t - t0, 3) for name, t in self.marks.items() if name != zero}
