"""Rank 0's window onto the MLflow run that the driver created.

A tracking-server outage must not kill a training run: every call is caught, what could not be sent
is kept (bounded) and re-sent on the next call, and one warning is printed per outage, not per step.
"""
from __future__ import annotations

import io
import logging
import time
from collections import deque

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
MAX_PENDING = 100_000  # metric points kept during an outage (~10 MB); the oldest go first


class RunLogger:
    def __init__(self, tracking_uri: str, run_id: str):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.pending: deque[Metric] = deque(maxlen=MAX_PENDING)
        self.pending_images: list[tuple[bytes, str]] = []
        self.down_since: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        self.flush()

    def log_png(self, png: bytes, artifact_file: str) -> None:
        self.pending_images.append((png, artifact_file))
        self.flush()

    def close(self, patience_s: float = 600.0) -> None:
        """At the end of training, wait out an outage (with backoff) rather than drop what is buffered."""
        from pipeline.tracking.retry import with_retries

        def send() -> None:
            if not self.flush():
                raise ConnectionError(f"{len(self.pending)} metric points and {len(self.pending_images)} images still buffered")

        try:
            with_retries(send, what="sending buffered MLflow metrics", patience_s=patience_s)
        except ConnectionError as e:
            log.error("MLflow still unreachable after %.0f s: %s are lost", patience_s, e)

    def flush(self) -> bool:
        try:
            while self.pending:
                batch = [self.pending[i] for i in range(min(1000, len(self.pending)))]  # MLflow's batch cap
                self.client.log_batch(self.run_id, metrics=batch)
                for _ in batch:
                    self.pending.popleft()
            while self.pending_images:
                png, name = self.pending_images[0]
                from PIL import Image

                self.client.log_image(self.run_id, Image.open(io.BytesIO(png)), artifact_file=name)
                self.pending_images.pop(0)
        except Exception as e:  # any transport or server error: keep training, retry later
            if self.down_since is None:
                self.down_since = time.time()
                log.warning("MLflow unreachable (%s); buffering metrics and retrying", type(e).__name__)
            return False
        if self.down_since is not None:
            log.warning("MLflow reachable again after %.0f s; buffered metrics sent", time.time() - self.down_since)
            self.down_since = None
        return True
