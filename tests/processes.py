"""The process tree from /proc, for tests that kill what a driver or a Ray node started."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line; Ray retitles its workers `ray::RayTrainWorker...`)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                out[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we read it
    return out


def descendants(root_pid: int) -> dict[int, str]:
    """pid → command line of every process below `root_pid`."""
    procs = processes()

    def under(pid: int) -> bool:
        while pid > 1:
            pid = procs.get(pid, (0, ""))[0]
            if pid == root_pid:
                return True
        return False

    return {pid: cmd for pid, (_, cmd) in procs.items() if under(pid)}


def kill(pids) -> None:
    """SIGKILL each pid; one already gone is fine."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
