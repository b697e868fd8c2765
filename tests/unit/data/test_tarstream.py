"""The lean tar reader agrees with tarfile on the tars other writers produce, and fails loudly."""

import io
import tarfile

import pytest
import webdataset as wds

from pipeline.data.errors import DataError
from pipeline.data.tarstream import iter_members, iter_samples


def make_tar(fmt, names_and_data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in names_and_data:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1.5  # a float forces pax records in PAX format
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = [
    ("a/0001.png", b"x" * 700),
    ("a/0001.cls", b"3"),
    ("deep/" + "d" * 120 + "/0002.PNG", b"y" * 513),  # > 100 chars: ustar prefix / pax path / GNU long name
    ("deep/" + "d" * 120 + "/0002.cls", b""),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_match_tarfile(fmt):
    raw = make_tar(fmt, MEMBERS)
    assert list(iter_members(io.BytesIO(raw))) == MEMBERS


def test_samples_grouped_like_webdataset():
    buf = io.BytesIO()
    with wds.TarWriter(buf) as writer:  # default float mtime: pax headers
        writer.write({"__key__": "k1", "png": b"p1", "cls": b"1", "json": b"{}"})
        writer.write({"__key__": "k2", "png": b"p2"})
    samples = list(iter_samples(io.BytesIO(buf.getvalue()), "u"))
    assert samples == [
        {"__key__": "k1", "__url__": "u", "png": b"p1", "cls": b"1", "json": b"{}"},
        {"__key__": "k2", "__url__": "u", "png": b"p2"},
    ]
    assert samples[1]["__key__"] == "k2"
    upper = make_tar(tarfile.USTAR_FORMAT, [("x/k3.PNG", b"q")])
    assert list(iter_samples(io.BytesIO(upper), "u")) == [{"__key__": "x/k3", "__url__": "u", "png": b"q"}]


def test_damaged_header_and_truncation_fail_loudly():
    raw = bytearray(make_tar(tarfile.USTAR_FORMAT, MEMBERS))
    raw[512 + 1024 + 130] ^= 0x01  # a size digit of the second header (after 512 + 700 padded to 1024)
    with pytest.raises(DataError, match="checksum"):
        list(iter_members(io.BytesIO(bytes(raw)), where="shard.tar"))
    whole = make_tar(tarfile.USTAR_FORMAT, MEMBERS)
    with pytest.raises(DataError, match="truncated"):
        list(iter_members(io.BytesIO(whole[:1200])))
