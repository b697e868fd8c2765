"""A real S3 HTTP endpoint: moto's server on 127.0.0.1, for every integration test that touches S3.

Nothing mocks boto3: the code under test talks HTTP to this server. It binds a free port and is
stopped when the session ends.
"""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest

@pytest.fixture(scope="session")
def s3_endpoint(fake_aws_env) -> str:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


