"""The read-ahead thread hands over bytes in order, and the reader's errors in the caller's thread."""

import io

import pytest

from pipeline.data.errors import DataError
from pipeline.data.s3 import ReadAhead


class FakeReader:
    url = "s3://fake/object"

    def __init__(self, payload: bytes, fail_after: int | None = None):
        self.source, self.fail_after, self.sent, self.closed = io.BytesIO(payload), fail_after, 0, False

    def readinto(self, buffer) -> int:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise DataError("reading stopped after 8 resumes")
        n = self.source.readinto(memoryview(buffer)[:1000])  # small chunks: many queue hand-offs
        self.sent += n
        return n

    def close(self):
        self.closed = True


def test_bytes_arrive_in_order():
    payload = bytes(range(256)) * 100
    reader = FakeReader(payload)
    stream = io.BufferedReader(ReadAhead(reader, depth=2), buffer_size=4096)
    assert stream.read() == payload
    stream.close()
    assert reader.closed


def test_reader_error_reaches_the_consumer_after_the_good_bytes():
    stream = io.BufferedReader(ReadAhead(FakeReader(b"x" * 5000, fail_after=3000), depth=2), buffer_size=1000)
    assert stream.read(3000) == b"x" * 3000
    with pytest.raises(DataError, match="resumes"):
        stream.read(1000)
    stream.close()
