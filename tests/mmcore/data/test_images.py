"""Image decoding: orientation, every colour mode, first frames, and the problems that become rejections."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmcore.config import IngestConfig
from mmcore.data.images import load_image
from mmcore.data.shards import decode_png

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
