"""Rank 0's logger: the training loop never waits for MLflow, and what it logs arrives in order."""
import io
import logging
import socket
import threading

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.tracking import run_logger
from pipeline.tracking.run_logger import RunLogger


def test_a_server_that_never_answers_does_not_stall_logging(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(30)
    uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
    logger = RunLogger(uri, "0123456789abcdef", patience_s=1.0)
    logger.log_metrics({"loss": 1.0}, step=1)
    conn, _ = srv.accept()  # the sender is now inside a request this server will never answer
    try:
        def training_loop():  # 500 more log steps while that request hangs
            for step in range(2, 502):
                logger.log_metrics({"loss": float(step), "d": 0.5}, step=step)

        loop = threading.Thread(target=training_loop)
        loop.start()
        loop.join(timeout=10)  # a logger that waited for the server would take 500 × 3 s
        assert not loop.is_alive(), "log_metrics blocked on the unresponsive server"
        with logger._lock:
            queued = [(m.key, m.step) for m in logger.pending]
        # Every call returned while the sender was blocked: the points wait in the buffer, in order.
        assert len(queued) == 1000 and queued[0] == ("loss", 2) and queued[-1] == ("d", 501)
        assert logger._sender.is_alive()
    finally:
        conn.close()
        srv.close()
    with caplog.at_level(logging.ERROR, logger=run_logger.__name__):
        logger.close()  # patience 1 s: gives up, and says how much is lost
    assert not logger._sender.is_alive()
    assert "1001 metric points and 0 images are lost" in caplog.text


def test_everything_logged_arrives_in_order_on_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    logger = RunLogger(uri, run_id, patience_s=30)
    for step in range(1, 2501):  # more than one MLflow batch (1000 points)
        logger.log_metrics({"loss": step / 10}, step=step)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    logger.log_png(png.getvalue(), "samples/step_0002500.png")
    logger.close()
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(1, 2501))
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/step_0002500.png"]


def test_wait_sent_returns_once_the_points_are_stored_and_never_waits_out_a_known_outage(tmp_path, monkeypatch):
    """Rank 0 calls wait_sent before a checkpoint: True means MLflow holds every point logged so far;
    a server known to be down makes it return False at once, not after its timeout."""
    import time

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    logger = RunLogger(uri, run_id, patience_s=5)
    logger.log_metrics({"samples_seen": 8.0, "loss": 0.5}, step=4)
    assert logger.wait_sent(60)
    assert [m.step for m in client.get_metric_history(run_id, "samples_seen")] == [4]  # stored, not queued
    logger.close()

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = RunLogger(f"http://127.0.0.1:{closed}", "0123456789abcdef", patience_s=0.5)
    down.log_metrics({"loss": 1.0}, step=1)
    assert not down.wait_sent(60)  # returns when the first send fails
    t0 = time.monotonic()
    down.log_metrics({"loss": 2.0}, step=2)
    assert not down.wait_sent(60) and time.monotonic() - t0 < 1.0  # the outage is known: no wait
    down.close()
