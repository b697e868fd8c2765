"""The bundled digits source (importing scikit-learn alone takes ~1 s, so not a unit test)."""

import io
import tarfile

import numpy as np
from PIL import Image

from pipeline.data.pack import pack


def test_digits_upscaled_to_rgb(tmp_path):
    manifest = pack("digits", str(tmp_path), shard_size=1000, resolution=16, progress=False)
    assert manifest["num_samples"] == 1797 and manifest["source"] == "digits"
    assert [s["samples"] for s in manifest["shards"]] == [1000, 797]
    with tarfile.open(tmp_path / "shard-000001.tar") as tar:
        png = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        image = np.asarray(Image.open(io.BytesIO(tar.extractfile(png).read())))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 2])  # grey copied to all channels
    assert image.max() > 200  # 0..16 ink scaled up to the byte range
