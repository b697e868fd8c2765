"""The images people really have, all in ONE shard written by webdataset's ShardWriter: grey, RGBA,
palette, CMYK JPEG, 16-bit grey PNG, a phone photo stored sideways with EXIF orientation 6, PNG and
WebP beside JPEG, labels in `.cls`, a truncated JPEG and images smaller than the resolution.
Indexed, verified, then decoded through the training loader: each arrives RGB and the right way up."""

import io
import itertools
import logging
import os

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.data.config import DataSpec
from pipeline.data.decode import DecodeConfig, SampleDecoder
from pipeline.data.errors import CorruptSampleError
from pipeline.data.index import index
from pipeline.data.stream import make_batches
from pipeline.data.verify import verify
from tests.unit.data.foreign_shards import jpeg_bytes, picture

SIDE = 32  # the resolution: "small" images are below it
SMALL = ("small", "tiny")


def red_over_blue(width: int, height: int) -> np.ndarray:
    """Top half red, bottom half blue: upside down or sideways is obvious."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, :, 0] = 255
    a[height // 2 :, :, 2] = 255
    return a


def grey_ramp(width: int, height: int) -> np.ndarray:
    """16-bit grey, bright at the top fading to dark at the bottom: mean 32,767, i.e. 127.5 of 255."""
    column = np.linspace(60_000, 5_000, height)
    return np.repeat(column[:, None], width, axis=1).round().astype(np.uint16)


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sideways_jpeg(width: int, height: int) -> bytes:
    """A camera's portrait photo: pixels stored turned 90° anticlockwise, EXIF orientation 6 says
    "turn 90° clockwise to show", so a correct viewer shows red on top."""
    stored = Image.fromarray(red_over_blue(width, height)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return encoded(stored, "JPEG", exif=exif, quality=95)


def messy_samples() -> list[tuple[str, str, bytes]]:
    """(key, member, bytes) in shard order."""
    rgb = Image.fromarray(red_over_blue(48, 40))
    ramp = grey_ramp(48, 40)
    truncated = jpeg_bytes(picture(200, 150, 0, np.random.default_rng(1)))
    return [
        ("grey", "png", encoded(Image.fromarray((ramp // 257).astype(np.uint8), mode="L"), "PNG")),
        ("rgba", "png", encoded(rgb.convert("RGBA"), "PNG")),
        ("palette", "png", encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")),
        ("cmyk", "jpg", encoded(rgb.convert("CMYK"), "JPEG", quality=95)),
        ("grey16", "png", encoded(Image.fromarray(ramp), "PNG")),  # Pillow opens it as mode I;16
        # 80 x 160 upright: shorter side 80 >= 2 x 32, so the loader takes the JPEG draft path too
        ("exif6", "jpg", sideways_jpeg(80, 160)),
        ("png", "png", encoded(rgb, "PNG")),
        ("webp", "webp", encoded(rgb, "WEBP", lossless=True)),
        ("jpeg", "jpg", encoded(rgb, "JPEG", quality=95)),
        ("broken", "jpg", truncated[: len(truncated) // 2]),  # header intact: fails only when decoded
        ("small", "png", encoded(Image.fromarray(red_over_blue(16, 12)), "PNG")),
        ("tiny", "webp", encoded(Image.fromarray(red_over_blue(10, 10)), "WEBP", lossless=True)),
    ]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("messy"))
    samples = messy_samples()
    with wds.ShardWriter(os.path.join(folder, "messy-%06d.tar"), maxcount=100, verbose=0) as sink:
        for i, (key, member, data) in enumerate(samples):
            sink.write({"__key__": key, member: data, "cls": i % 3})
    report = index(folder)  # label_key auto
    return folder, report.manifest, {key: i % 3 for i, (key, _, _) in enumerate(samples)}


def spec(root: str, **kw) -> DataSpec:
    return DataSpec(**{"root": root, "resolution": SIDE, "sampling": "epoch", "shuffle_buffer": 0, **kw})


def one_epoch(stream, samples: int) -> dict[str, tuple[np.ndarray, int]]:
    """{key: (HxWx3 uint8 image, label)} of one epoch in one batch of `samples`."""
    images, labels, keys = next(iter(stream))
    assert images.shape == (samples, 3, SIDE, SIDE)
    pixels = ((images + 1) * 127.5).round().permute(0, 2, 3, 1).byte().numpy()
    return {k: (p, int(l)) for k, p, l in zip(keys, pixels, labels)}


def test_index_finds_every_member_and_the_cls_labels(messy):
    _, manifest, _ = messy
    assert manifest["num_samples"] == 12 and manifest["label_key"] == "cls"  # `.cls` found by auto
    assert manifest["image_key"] == "auto"  # png, jpg and webp mixed: each sample uses the one it has
    assert manifest["members"] == {"cls": 12, "jpg": 4, "png": 6, "webp": 2}
    assert manifest["labels"] == {"labelled": 12, "values": [0, 1, 2]}


def test_verify_names_the_truncated_jpeg_and_skips_it(messy):
    root, _, _ = messy
    failed = verify(root)
    assert not failed.ok and len(failed.problems) == 1
    assert "'broken'" in failed.problems[0] and "messy-000000.tar" in failed.problems[0]
    skipped = verify(root, on_corrupt="skip", max_corrupt_fraction=0.1)
    assert skipped.ok and len(skipped.skipped) == 1 and "'broken'" in skipped.skipped[0]


def test_every_image_arrives_rgb_and_the_right_way_up(messy, caplog):
    root, manifest, labels = messy
    stream = make_batches(spec(root, on_corrupt="skip", max_corrupt_fraction=0.1), rank=0, world_size=1,
                          batch_size=12, seed=0, with_keys=True)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.stream"):
        seen = one_epoch(stream, 12)
    assert set(seen) == {k for k in labels if k != "broken"}  # the truncated one was skipped...
    assert stream.stats()["corrupt_skipped"] == 1  # ...and counted
    for key, (image, label) in seen.items():
        assert image.shape == (SIDE, SIDE, 3) and label == labels[key], key
        top, bottom = image[: SIDE // 2 - 2].astype(float), image[SIDE // 2 + 2 :].astype(float)
        if key.startswith("grey"):
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all(), key
            assert top.mean() > bottom.mean() + 50, key
        else:  # red on top, blue below: neither sideways nor upside down (exif6 above all)
            assert top[..., 0].mean() > 200 and top[..., 2].mean() < 60, key
            assert bottom[..., 2].mean() > 200 and bottom[..., 0].mean() < 60, key
    # The 16-bit ramp scaled, not clipped: as bright as its 8-bit copy (clipping gave ~250).
    assert abs(seen["grey16"][0].mean() - seen["grey"][0].mean()) < 1.5
    assert abs(seen["grey16"][0].mean() - 127.5) < 3
    # Small images were enlarged and counted; one warning names how many, not one per image.
    assert stream.stats()["upscaled"] == len(SMALL)
    warnings = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"{len(SMALL)} of the first 12 images are smaller than {SIDE} px")


@pytest.mark.parametrize("sampling", ["epoch", "resampled"])
def test_the_upscaled_count_goes_on_without_more_warnings(messy, caplog, sampling):
    root, _, _ = messy
    data = spec(root, on_corrupt="skip", max_corrupt_fraction=0.1, sampling=sampling)
    stream = make_batches(data, rank=0, world_size=1, batch_size=4, seed=0)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.stream"):
        # 24 samples: epoch, two epochs of 3 batches; resampled (one shard, no shuffle), the shard's
        # 11 good samples twice over, then its first two (grey ones): both see the small pair twice.
        for _ in itertools.islice(iter(stream), 6):
            pass
    assert stream.stats()["upscaled"] == 2 * len(SMALL)
    assert sum("upscaled" in r.getMessage() for r in caplog.records) == 1


def test_the_loader_names_the_truncated_jpeg_under_on_corrupt_fail(messy):
    root, _, _ = messy
    stream = make_batches(spec(root), rank=0, world_size=1, batch_size=12, seed=0)
    with pytest.raises(CorruptSampleError, match=r"'broken' in shard .*messy-000000\.tar"):
        next(iter(stream))


@pytest.mark.parametrize("draft", [True, False])
def test_exif_orientation_holds_with_and_without_jpeg_draft(draft):
    decode = SampleDecoder(DecodeConfig(kind="indexed", resolution=16, label_key=None, draft=draft))
    image, _ = decode({"__key__": "k", "__url__": "u", "jpg": sideways_jpeg(80, 160)})
    assert image[:6, :, 0].mean() > 200 and image[-6:, :, 2].mean() > 200  # red on top, blue below
    assert decode.upscaled == 0  # draft never goes below the resize target


def test_transparent_pixels_come_out_white_not_black():
    clear = np.zeros((40, 40, 4), np.uint8)  # black, fully transparent
    decode = SampleDecoder(DecodeConfig(kind="indexed", resolution=32, label_key=None))
    image, _ = decode({"__key__": "k", "__url__": "u", "png": encoded(Image.fromarray(clear, mode="RGBA"), "PNG")})
    assert image.min() == 255
