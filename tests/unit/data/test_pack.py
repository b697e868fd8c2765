import hashlib
import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

from pipeline.data.manifest import load_manifest
from pipeline.data.pack import pack


def test_manifest_describes_every_shard(tiny_root):
    manifest, snapshot = load_manifest(tiny_root)
    assert manifest["num_samples"] == 50
    assert manifest["image_size"] == [3, 8, 8]
    assert [s["samples"] for s in manifest["shards"]] == [16, 16, 16, 2]
    assert [s["name"] for s in manifest["shards"]] == [f"shard-{i:06d}.tar" for i in range(4)]
    for shard in manifest["shards"]:
        data = open(os.path.join(tiny_root, shard["name"]), "rb").read()
        assert len(data) == shard["bytes"]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert manifest["total_bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert snapshot == hashlib.sha256(open(os.path.join(tiny_root, "manifest.json"), "rb").read()).hexdigest()


def test_members_have_no_pax_headers_and_samples_round_trip(tiny_root, tiny_npz):
    src = np.load(tiny_npz)
    with tarfile.open(os.path.join(tiny_root, "shard-000000.tar")) as tar:
        members = tar.getmembers()
        assert all(not m.pax_headers for m in members)  # pax would add ~1 KB per member
        assert all(isinstance(m.mtime, int) for m in members)
        png = [m for m in members if m.name.endswith(".png")][0]
        key = png.name.split(".")[0]
        image = np.asarray(Image.open(io.BytesIO(tar.extractfile(png).read())))
        label = int(tar.extractfile(key + ".cls").read())
    # 8x8 source packed at resolution 8: no resize, so the pixels are the source's exactly.
    assert np.array_equal(image, src["images"][int(key)])
    assert label == src["labels"][int(key)]
    # one ustar header (512 B) per member plus padding: nothing like a pax header's extra 1 KB.
    size = os.path.getsize(os.path.join(tiny_root, "shard-000000.tar"))
    assert size < 16 * (2 * 512 + 512 + 512) + 2 * 10240


def test_repacking_is_byte_identical_and_keeps_the_snapshot(tmp_path, tiny_npz):
    first = pack(tiny_npz, str(tmp_path / "a"), shard_size=16, resolution=8, progress=False)
    _, snap1 = load_manifest(str(tmp_path / "a"))
    mtimes = {n: os.stat(tmp_path / "a" / n).st_mtime_ns for n in os.listdir(tmp_path / "a")}
    second = pack(tiny_npz, str(tmp_path / "a"), shard_size=16, resolution=8, progress=False)
    _, snap2 = load_manifest(str(tmp_path / "a"))
    assert snap1 == snap2 and first == second
    assert mtimes == {n: os.stat(tmp_path / "a" / n).st_mtime_ns for n in os.listdir(tmp_path / "a")}
    other = pack(tiny_npz, str(tmp_path / "b"), shard_size=16, resolution=8, progress=False)
    assert [s["sha256"] for s in other["shards"]] == [s["sha256"] for s in first["shards"]]


def test_folder_source_takes_class_from_subfolder(tmp_path):
    for cls, value in (("cats", 10), ("dogs", 200)):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(tmp_path / "src" / cls / f"{i}.png")
    manifest = pack(str(tmp_path / "src"), str(tmp_path / "out"), resolution=8, progress=False)
    assert manifest["classes"] == ["cats", "dogs"] and manifest["num_samples"] == 6
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, data in members.items():
        if name.endswith(".png"):
            pixel = np.asarray(Image.open(io.BytesIO(data)))[4, 4, 0]
            cls = int(members[name[:-4] + ".cls"])
            assert pixel == (10 if cls == 0 else 200)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["image_size"] == [3, 8, 8]
