"""`ganpipe data preview`: a grid of samples decoded as evaluation decodes them, in shard order or a
seeded draw, labels under the tiles; corrupt samples left out and named."""

import io
import os
import random

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.index import index
from pipeline.data.preview import LABEL_BAND, PAD, label_text, preview
from tests.unit.data.foreign_shards import jpeg_bytes, picture

runner = CliRunner()
COUNT, BROKEN = 7, 2  # samples written; position of the truncated JPEG


def colour(i: int) -> tuple[int, int, int]:
    return (30 * i, 255 - 30 * i, 90)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """7 samples over two shards (4 + 3), each one flat colour at 24x20 (png), cls = i % 3;
    sample 2 is a truncated JPEG instead. Returns (root, keys in shard order)."""
    root = str(tmp_path_factory.mktemp("preview"))
    keys = [f"s{i:02d}" for i in range(COUNT)]
    with wds.ShardWriter(os.path.join(root, "part-%06d.tar"), maxcount=4, verbose=0) as sink:
        for i, key in enumerate(keys):
            if i == BROKEN:
                data = jpeg_bytes(picture(200, 150, 0, np.random.default_rng(1)))
                sink.write({"__key__": key, "jpg": data[: len(data) // 2], "cls": i % 3})
                continue
            buf = io.BytesIO()
            Image.new("RGB", (24, 20), colour(i)).save(buf, format="PNG")
            sink.write({"__key__": key, "png": buf.getvalue(), "cls": i % 3})
    index(root)
    return root, keys


def test_grid_in_shard_order_with_labels(shards, tmp_path):
    root, keys = shards
    out = tmp_path / "grid.png"
    r = runner.invoke(app, ["data", "preview", root, "-n", "5", "-o", str(out), "--resolution", "16"])
    assert r.exit_code == 0, r.output
    assert "5 sample(s) in shard order" in r.output and "'s02'" in r.output  # the broken one is named
    grid = np.asarray(Image.open(out))
    # 5 tiles: 3 per row, 2 rows; each tile 16 px plus a label band, 2 px apart.
    assert grid.shape == (2 * (16 + LABEL_BAND + PAD) + PAD, 3 * (16 + PAD) + PAD, 3)
    shown = [i for i in range(COUNT) if i != BROKEN][:5]  # first five decodable, across both shards
    for tile, i in enumerate(shown):
        r_, c = divmod(tile, 3)
        y, x = PAD + r_ * (16 + LABEL_BAND + PAD), PAD + c * (16 + PAD)
        assert tuple(grid[y + 8, x + 8]) == colour(i), (tile, keys[i])
        assert grid[y + 16 : y + 16 + LABEL_BAND, x : x + 16].max() > 0  # a label is written under it
    assert not grid[PAD + 16 + LABEL_BAND + PAD :, PAD + 2 * (16 + PAD) :].any()  # no sixth tile


def test_a_shuffled_draw_is_seeded_and_the_same_decode(shards):
    root, keys = shards
    first = preview(root, n=4, shuffle=True, seed=3, resolution=8)
    again = preview(root, n=4, shuffle=True, seed=3, resolution=8)
    assert first.keys == again.keys and np.array_equal(np.asarray(first.image), np.asarray(again.image))
    drawn = [keys[p] for p in random.Random(3).sample(range(COUNT), 4)]
    assert first.keys == [k for k in drawn if k != keys[BROKEN]]  # draw order; the broken one left out
    assert first.labels == [keys.index(k) % 3 for k in first.keys]
    assert first.image.size[0] == 2 * (8 + PAD) + PAD  # 3 or 4 tiles: 2 per row


def test_packed_shards_default_to_their_size_and_refuse_another(tiny_root, tmp_path):
    result = preview(tiny_root, n=3)
    assert result.resolution == 8 and result.keys == sorted(result.keys) and len(result.keys) == 3
    r = runner.invoke(app, ["data", "preview", tiny_root, "--resolution", "16", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "hold 8 px images" in r.output


def test_labels_read_as_class_names_when_the_manifest_has_them():
    assert (label_text(1, ["cat", "dog"]), label_text(3, None), label_text(-1, ["cat"])) == ("dog", "3", "")


def test_help():
    r = runner.invoke(app, ["data", "preview", "--help"])
    assert r.exit_code == 0 and "--shuffle" in r.output and "--resolution" in r.output
