"""One call run in a thread while the caller does something else: how the driver starts Ray while it
opens the MLflow run (train/launch.py). Starting a local Ray is mostly waiting for its processes (GCS,
raylet, agents) to come up, and opening the run is mostly importing MLflow and talking to its store,
so the two overlap well even on 2 cores.
"""
from __future__ import annotations

import threading
from typing import Any, Callable


class Background:
    """`fn(*args, **kwargs)` in a daemon thread; `result()` waits for it and returns its value or
    raises its error in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "background", **kwargs: Any):
        self._box: dict[str, Any] = {}

        def run() -> None:
            try:
                self._box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # re-raised by result(), in the caller's thread
                self._box["error"] = e

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]
