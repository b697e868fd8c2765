"""A fault-injecting proxy in front of the S3 endpoint (tests/integration/conftest.py starts moto).

Every S3 test talks HTTP to these servers; nothing mocks boto3. Both bind free ports on 127.0.0.1
and are stopped when the session ends.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

class FaultProxy(ThreadingHTTPServer):
    """Forwards HTTP to `upstream`; of the object GETs, every `fail_every`-th is answered 503
    SlowDown and every `cut_every`-th sends its headers and half its body, then drops the
    connection. Deterministic (a counter, not a coin) so a failure reproduces."""

    daemon_threads = True

    def __init__(self, upstream: str, fail_every: int = 4, cut_every: int = 3):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.fail_every, self.cut_every = fail_every, cut_every
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.failed = self.cut = self.passed = 0

    def configure(self, fail_every: int, cut_every: int, first: int = 1) -> None:
        """New schedule; `first` is the number the next object GET gets (to fault it at once)."""
        with self.lock:
            self.fail_every, self.cut_every, self.counter = fail_every, cut_every, itertools.count(first)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_fault(self) -> str:
        with self.lock:
            n = next(self.counter)
            if self.fail_every and n % self.fail_every == 0:
                self.failed += 1
                return "fail"
            if self.cut_every and n % self.cut_every == 0:
                self.cut += 1
                return "cut"
            self.passed += 1
            return "pass"


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        is_object_get = self.command == "GET" and self.path.strip("/").count("/") >= 1
        fault = self.server.next_fault() if is_object_get and answer.status < 300 else "pass"
        if fault == "fail":
            message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            # a HEAD answer's Content-Length is the object's size: pass it on untouched
            if key.lower() not in _HOP_BY_HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture
def fault_proxy(s3_endpoint):
    proxy = FaultProxy(s3_endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    thread.join()


def make_npz(path, count: int, side: int = 8, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(count) % 10)
    return str(path)


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory) -> str:
    """100 samples at 8x8: shards of 30, 30, 30, 10 (uneven on purpose)."""
    return make_npz(tmp_path_factory.mktemp("src") / "small.npz", count=100)
