"""Image decoding: orientation, every colour mode, first frames, and the problems that become rejections."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcore.catalog import SECTIONS, ProcessedDir
from mmcore.config import IngestConfig, load_config
from mmcore.data.images import PAD_FILL, RESIZE_MODES, load_image, to_rgb_square
from mmcore.data.shards import decode_png
from mmcore.inference import decode_image

CFG = IngestConfig(image_size=16, min_side=8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    loaded = load_image(data, CFG)
    assert isinstance(loaded, tuple), loaded
    return decode_png(loaded[0])  # (3, 16, 16)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (32, 16), (255, 0, 0))
    img.paste((0, 0, 255), (16, 0, 32, 16))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the displayed image is 16 wide, 32 tall, red on top
    data = _encode(img, "JPEG", exif=exif, quality=95)
    png, width, height = load_image(data, CFG)
    px = decode_png(png)
    assert (width, height) == (16, 32)  # the size as shown, and as the image is stored: upright
    assert px[0, 2, 8] > 200 and px[2, 2, 8] < 60  # top is red
    assert px[2, 13, 8] > 200 and px[0, 13, 8] < 60  # bottom is blue


@pytest.mark.parametrize("orientation, size", [(1, (32, 16)), (3, (32, 16)), (5, (16, 32)), (8, (16, 32))])
def test_the_size_recorded_is_after_the_exif_orientation(orientation, size):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.new("RGB", (32, 16), (9, 90, 200)), "JPEG", exif=exif)
    assert load_image(data, CFG)[1:] == size


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1"])
def test_any_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = Image.new("RGB", (20, 20), (200, 40, 40)).convert(mode)
    px = _pixels(_encode(img, fmt))
    assert px.shape == (3, 16, 16) and px.dtype == np.uint8


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert _pixels(_encode(img, "PNG")).min() == 255


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    arr = np.full((20, 20), 32768, dtype=np.uint16)  # mid grey in 16 bits
    data = _encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    px = _pixels(data)
    assert 120 <= px.mean() <= 135  # 32768 / 65535 * 255 = 127.5; clipping would give 255


def test_animated_images_take_the_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    px = _pixels(buf.getvalue())
    assert px[0].mean() > 200 and px[2].mean() < 60


def test_jpeg_draft_mode_keeps_quality():
    """A large JPEG decoded at a reduced scale still matches a full decode closely after resizing."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((800, 800), Image.Resampling.BICUBIC)
    data = _encode(img, "JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((16, 16), Image.Resampling.BICUBIC))
    drafted = _pixels(data).transpose(1, 2, 0)
    assert np.abs(full.astype(int) - drafted.astype(int)).mean() < 6


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_a_cut_file_is_truncated(fmt):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _encode(img, fmt)
    problem = load_image(data[: len(data) // 2], CFG)
    assert problem.reason == "truncated" and "truncated" in problem.message


@pytest.mark.parametrize("fmt, cut", [("JPEG", 8), ("JPEG", 150), ("JPEG", 400), ("PNG", 40), ("BMP", 30),
                                      ("GIF", 50), ("WEBP", 200)])
def test_a_file_cut_in_its_headers_is_truncated_too(fmt, cut):
    """Cut before its image data, a file makes Pillow fail early ("Truncated File Read", "cannot identify"): its
    own header says it was longer."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    problem = load_image(_encode(img, fmt)[:cut], CFG)
    assert problem.reason == "truncated", problem
    assert f"truncated at {cut} bytes" in problem.message or "image file is truncated" in problem.message


@pytest.mark.parametrize("data", [b"definitely not an image", b"GIF89a" + b"\x00" * 5, b"",
                                  b"\x89PNG\r\n\x1a\nnot really a png", b"BM" + bytes(40), b"\xff\xd8"])
def test_bytes_that_are_not_an_image_are_undecodable(data):
    problem = load_image(data, CFG)
    assert problem.reason == "undecodable" and problem.message
    assert " at 0x" not in problem.message  # Pillow's own text names the BytesIO at its memory address


def test_an_unidentified_image_says_what_its_bytes_are_the_same_every_time():
    first, again = load_image(b"definitely not an image", CFG), load_image(b"definitely not an image", CFG)
    assert first == again and first.message == "not an image Pillow can read: 23 bytes starting 64 65 66 69 6e 69 74 65"


# Resize modes (ingest.resize): crop as torchvision, pad letterboxed, squash stretched; all equal on squares.

def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random image, like a photo downscaled: noise blown up from a coarse grid."""
    coarse = np.random.default_rng(seed).integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("width, height, size", [(640, 480, 224), (300, 500, 224), (1000, 700, 224), (97, 61, 32),
                                                 (224, 300, 224), (500, 300, 64)])
def test_crop_is_torchvision_resize_then_center_crop(width, height, size):
    from torchvision.transforms.v2 import functional as TF

    img = _photo(width, height)
    ours = np.asarray(to_rgb_square(img.copy(), size, "crop"))
    resized = TF.resize(img, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    theirs = np.asarray(TF.center_crop(resized, size))
    np.testing.assert_array_equal(ours, theirs)


def test_crop_of_a_large_photo_is_within_a_few_grey_levels_of_torchvision():
    """From a 6x reduction up, Pillow's reducing_gap shrinks by an integer factor first (much faster)."""
    from torchvision.transforms.v2 import functional as TF

    img = _photo(4000, 3000)
    ours = np.asarray(to_rgb_square(img.copy(), 224, "crop")).astype(int)
    theirs = np.asarray(TF.center_crop(TF.resize(img, 224, interpolation=TF.InterpolationMode.BICUBIC), 224))
    diff = np.abs(ours - theirs.astype(int))
    assert diff.max() <= 4 and diff.mean() < 1


def test_crop_keeps_the_centre_and_pad_letterboxes_on_the_mean_colour():
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # red | blue | red, in thirds
    crop = np.asarray(to_rgb_square(img.copy(), 12, "crop"))
    assert crop.shape == (12, 12, 3) and (crop[..., 2] > 200).all()  # only the blue middle third is left
    pad = np.asarray(to_rgb_square(img.copy(), 12, "pad"))
    assert (pad[:4] == PAD_FILL).all() and (pad[8:] == PAD_FILL).all()  # 60x20 -> 12x4, rows 4..7
    assert (pad[4:8, :4, 0] > 200).all() and (pad[4:8, 5:7, 2] > 200).all()
    squash = np.asarray(to_rgb_square(img.copy(), 12, "squash"))
    assert (squash[:, :3, 0] > 200).all() and (squash[:, 5:7, 2] > 200).all()  # all three thirds, stretched
    before = img.resize((12, 12), Image.Resampling.BICUBIC, reducing_gap=3.0)  # the one preprocessing until now
    assert np.array_equal(squash, np.asarray(before))
    with pytest.raises(ValueError, match=r"unknown resize mode 'fit'; choose one of \['crop', 'pad', 'squash'\]"):
        to_rgb_square(img, 12, "fit")


@pytest.mark.parametrize("side", [16, 40, 64])
def test_a_square_image_is_the_same_in_every_mode(side):
    data = _encode(_photo(side, side), "PNG")
    pngs = {mode: load_image(data, IngestConfig(image_size=16, min_side=8, resize=mode))[0] for mode in RESIZE_MODES}
    assert pngs["crop"] == pngs["squash"] == pngs["pad"]


def test_square_sample_shards_are_identical_under_crop_and_squash(tmp_path):
    """The demo's synthetic images are square: its ingested samples (and so its numbers) do not change. The
    shard files differ only in the ingest settings they record in their metadata."""
    from mmcore.data.ingest import ingest
    from mmcore.data.sources import open_source
    from mmcore.data.synth import generate_shapes

    generate_shapes(tmp_path / "raw", images=12, seed=3, image_size=48)  # resized to 32: the pixels are recomputed
    shards = {}
    for mode in ("crop", "squash"):
        out = ProcessedDir(tmp_path / mode)
        ingest(open_source(tmp_path / "raw"), out, IngestConfig(image_size=32, shard_size=5, resize=mode))
        shards[mode] = sorted(out.path.glob("samples-*.parquet"))
    assert [p.name for p in shards["crop"]] == [p.name for p in shards["squash"]] and len(shards["crop"]) == 3
    for crop, squash in zip(shards["crop"], shards["squash"], strict=True):
        assert pq.read_table(crop).equals(pq.read_table(squash))
        meta = [json.loads(pq.read_metadata(p).metadata[b"mmcore"]) for p in (crop, squash)]
        assert [m["ingest"].pop("resize") for m in meta] == ["crop", "squash"] and meta[0] == meta[1]


def test_the_resize_mode_keys_the_ingested_dataset():
    """Another mode is another processed folder (the ingest key digests the whole ingest section), so
    nothing ingested under one mode is reused under another."""
    keys = {load_config("smoke", {"ingest.resize": mode}).digest(*SECTIONS["ingest"]) for mode in RESIZE_MODES}
    assert len(keys) == 3
    with pytest.raises(ValueError, match=r"ingest.resize: Input should be 'crop', 'pad' or 'squash' \(got 'fit'\)"):
        load_config("smoke", {"ingest.resize": "fit"})


def test_serving_resizes_as_ingest_did():
    data = _encode(_photo(90, 40), "PNG")
    for mode in RESIZE_MODES:
        served = decode_image(data, 16, resize=mode)  # (3, 16, 16)
        assert np.array_equal(served, _pixels_as(data, mode))


def _pixels_as(data: bytes, mode: str) -> np.ndarray:
    loaded = load_image(data, IngestConfig(image_size=16, min_side=8, resize=mode))
    return decode_png(loaded[0])
