"""Rank 0's window onto the MLflow run that the driver created.

The training loop only appends to a bounded buffer; a background thread sends it. An outage, or a
server that accepts connections and never answers, therefore never stalls a step, and the other
ranks never wait at the next collective for rank 0's HTTP calls. What could not be sent is kept
(bounded, the oldest dropped first) and re-sent with backoff; one warning per outage, not per step.
close() waits the outage out, up to the run's patience, before it gives up on what is buffered.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from typing import NamedTuple

log = logging.getLogger(__name__)
MAX_PENDING = 100_000  # metric points kept during an outage (~10 MB); the oldest go first
MAX_PENDING_IMAGES = 50  # sample grids kept during an outage (~50 × 200 kB); the oldest go first
BATCH = 1000  # MLflow's cap on metrics per log_batch
DEFAULT_PATIENCE_S = 600.0
IDLE_WAKE_S = 1.0  # the sender wakes at least this often to retry what is buffered
MAX_BACKOFF_S = 30.0


class Point(NamedTuple):
    """One metric point as the loop records it; made an mlflow Metric only when sent."""
    key: str
    value: float
    timestamp: int  # ms
    step: int


class RunLogger:
    """Importing mlflow takes seconds of CPU (~1.5 s on a quiet core); rank 0 used to pay it before its
    first step while the other ranks waited at the first collective. The sender thread now imports it
    when it first sends, so the loop never does."""

    def __init__(self, tracking_uri: str, run_id: str, *, patience_s: float = DEFAULT_PATIENCE_S):
        self.tracking_uri = tracking_uri
        self._client = None  # MlflowClient, made by the sender thread (see the class's note)
        self.run_id = run_id
        self.patience_s = patience_s  # the job's tracking.patience_s
        self.pending: deque[Point] = deque(maxlen=MAX_PENDING)
        self.pending_images: deque[tuple[bytes, str]] = deque(maxlen=MAX_PENDING_IMAGES)
        self.down_since: float | None = None
        self._inflight = 0  # points taken from `pending` by the sender, not yet confirmed sent
        self._lock = threading.Lock()  # guards both buffers between the loop and the sender
        self._wake = threading.Event()  # the loop added something
        self._closed = threading.Event()  # close() was called: send what is left, then stop
        self._sender = threading.Thread(target=self._send_loop, name="mlflow-sender", daemon=True)
        self._sender.start()

    # -- the training loop's side: never blocks on the network --------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        points = [Point(k, float(v), now, step) for k, v in metrics.items()]
        with self._lock:
            self.pending.extend(points)
        self._wake.set()

    def log_png(self, png: bytes, artifact_file: str) -> None:
        with self._lock:
            self.pending_images.append((png, artifact_file))
        self._wake.set()

    def wait_sent(self, timeout_s: float) -> bool:
        """Wait until every metric point logged so far is in MLflow (True), or until the sender
        knows the server is down or `timeout_s` has passed (False). Called before a checkpoint is
        reported, so that a checkpoint implies its steps' metrics are stored: a run resumed from it
        after its driver died has no other copy of them. A known outage returns at once (it never
        stalls training); a server that has just gone quiet costs at most `timeout_s`, once."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while True:
            with self._lock:
                if not self.pending and not self._inflight:
                    return True
            if self.down_since is not None or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def close(self) -> None:
        """At the end of training, wait out an outage (with backoff) rather than drop what is
        buffered; after the run's patience_s the rest is lost."""
        self._closed.set()
        self._wake.set()
        # The sender exits once the buffers are empty or the patience is spent; the margin covers
        # one last request that started just before the deadline (MLflow's HTTP timeout).
        self._sender.join(timeout=self.patience_s + 120.0)

    # -- the sender thread -------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _send_loop(self) -> None:
        sent, backoff, deadline = True, IDLE_WAKE_S, None
        while True:
            if sent:  # up: send as soon as the loop adds something (or every IDLE_WAKE_S)
                self._wake.wait(timeout=IDLE_WAKE_S)
            elif deadline is None:  # down: new points do not hurry the retry; close() does
                self._closed.wait(timeout=backoff)
            else:  # closing and down: back off until the deadline
                time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
            self._wake.clear()
            closing = self._closed.is_set()  # read once: close() may come during the flush below
            if closing and deadline is None:
                deadline = time.monotonic() + self.patience_s
            sent = self.flush()
            if closing and (sent or time.monotonic() >= deadline):
                if not sent:
                    log.error("MLflow still unreachable after %.0f s: %d metric points and %d images are lost",
                              self.patience_s, len(self.pending), len(self.pending_images))
                return
            backoff = IDLE_WAKE_S if sent else min(backoff * 2, MAX_BACKOFF_S)

    def flush(self) -> bool:
        """Send everything buffered; False (and the rest kept, in order) when the server fails."""
        try:
            while batch := self._take(BATCH):
                try:
                    from mlflow.entities import Metric

                    self.client.log_batch(self.run_id, metrics=[Metric(*p) for p in batch])
                except BaseException:
                    self._put_back(batch)
                    raise
                with self._lock:
                    self._inflight = 0
            while self.pending_images:
                png, name = self.pending_images[0]
                from PIL import Image

                self.client.log_image(self.run_id, Image.open(io.BytesIO(png)), artifact_file=name)
                with self._lock:
                    if self.pending_images and self.pending_images[0][1] == name:
                        self.pending_images.popleft()
        except Exception as e:  # any transport or server error: keep training, retry later
            if self.down_since is None:
                self.down_since = time.time()
                log.warning("MLflow unreachable (%s); buffering metrics and retrying", type(e).__name__)
            return False
        if self.down_since is not None:
            log.warning("MLflow reachable again after %.0f s; buffered metrics sent", time.time() - self.down_since)
            self.down_since = None
        return True

    def _take(self, n: int) -> list[Point]:
        with self._lock:
            taken = [self.pending.popleft() for _ in range(min(n, len(self.pending)))]
            self._inflight = len(taken)
            return taken

    def _put_back(self, batch: list[Point]) -> None:
        # In front of what arrived meanwhile, in order; over the bound, the oldest points go.
        with self._lock:
            self._inflight = 0
            merged = batch + list(self.pending)
            self.pending.clear()
            self.pending.extend(merged[-MAX_PENDING:])
