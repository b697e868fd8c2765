"""Patience with the tracking server where giving up would lose work: the end of a training run
(logging and registering the generator) waits out an outage instead of dropping the model."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def with_retries(fn: Callable[[], T], *, what: str, patience_s: float = 600.0, first_wait_s: float = 2.0) -> T:
    """fn(), retried with exponential backoff (2, 4, 8 … 60 s) until `patience_s` has passed."""
    deadline, wait = time.monotonic() + patience_s, first_wait_s
    while True:
        try:
            return fn()
        except Exception as e:
            if time.monotonic() + wait > deadline:
                raise
            log.warning("%s failed (%s: %s); retrying in %.0f s", what, type(e).__name__, str(e)[:200], wait)
            time.sleep(wait)
            wait = min(wait * 2, 60.0)
