"""One boto3 client per process: reused inside a process, never inherited through fork."""

import multiprocessing

from pipeline.data import s3


def _child(queue):
    inherited = s3._clients[(multiprocessing.parent_process().pid, "http://127.0.0.1:9")]
    queue.put(s3.client("http://127.0.0.1:9") is not inherited)


def test_client_reused_in_process_and_rebuilt_after_fork(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    first = s3.client("http://127.0.0.1:9")
    assert s3.client("http://127.0.0.1:9") is first
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    assert queue.get(timeout=10) is True
    child.join(timeout=10)


def test_endpoint_precedence(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://from-env:9000")
    assert s3.resolve_endpoint(None) == "http://from-env:9000"
    assert s3.resolve_endpoint("http://explicit:1") == "http://explicit:1"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert s3.resolve_endpoint(None) is None


def test_s3_scheme_is_registered_in_webdataset():
    import webdataset as wds

    assert wds.gopen_schemes["s3"] is s3.gopen_s3
