"""Decoding, checking and resizing one image: any file Pillow reads -> a size x size RGB PNG (cropped, padded or
squashed to a square)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmcore.config import IngestConfig
from mmcore.data import records as R

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ORIENTATION = 0x0112  # the EXIF orientation tag
_SWAPPING = (5, 6, 7, 8)  # orientations that turn the image by 90 degrees (transpose, rotate, transverse)
_PNG = b"\x89PNG\r\n\x1a\n"
# zlib level of the stored PNGs. On photos at 224 px, level 1 encodes in 4.9 ms against 25.7 ms at Pillow's
# default 6, for 17% more bytes (81 against 69 KB), and decodes as fast: encoding was most of ingest's work.
PNG_LEVEL = 1
RESIZE_MODES = ("crop", "pad", "squash")
# The ImageNet mean colour: letterbox bars normalise to zero, the input a convolution sees as "nothing here".
PAD_FILL = (124, 116, 104)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: alpha is composited on white, 16-bit and float are scaled, not clipped."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = max(float(arr.max()), 1e-12)
        else:  # 16-bit data stored in a wider mode may still be 8-bit in range
            top = 255.0 if arr.max() <= 255 else 65535.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def to_rgb_square(img: Image.Image, size: int, resize: str = "squash") -> Image.Image:
    """Orientation applied, first frame, any mode to RGB, made size x size: the one preprocessing.

    `resize` (IngestConfig.resize) says how a non-square image becomes square: crop, pad or squash.
    """
    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale (1/2, 1/4, 1/8), both sides still >= size
    frame = to_rgb(ImageOps.exif_transpose(img))  # an animated image is at its first frame after open
    if resize == "crop":
        return _crop(frame, size)
    if resize == "pad":
        return _pad(frame, size)
    if resize != "squash":
        raise ValueError(f"unknown resize mode {resize!r}; choose one of {list(RESIZE_MODES)}")
    return _resize(frame, (size, size))


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic, antialiased (Pillow's filters widen with the reduction), as torchvision resizes a PIL image.
    `reducing_gap` first shrinks by an integer factor when a side shrinks 6x or more (much faster on large
    photos; measured within 3 grey levels of the plain resize, half a level on average, on sharp detail);
    below that it is torchvision's resize exactly."""
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _crop(img: Image.Image, size: int) -> Image.Image:
    """Shortest side to `size`, then the centre `size` x `size`: torchvision's Resize(size) + CenterCrop(size),
    with the same rounding (the long side truncated, the offsets rounded)."""
    width, height = img.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    if new != img.size:
        img = _resize(img, new)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return img.crop((left, top, left + size, top + size)) if new != (size, size) else img


def _pad(img: Image.Image, size: int) -> Image.Image:
    """Longest side to `size`, centred on a `size` x `size` canvas of PAD_FILL (letterbox)."""
    width, height = img.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = _resize(img, new) if new != img.size else img
    if new == (size, size):
        return resized
    canvas = Image.new("RGB", (size, size), PAD_FILL)
    canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def turned(img: Image.Image) -> bool:
    """Whether the image's EXIF orientation (as `ImageOps.exif_transpose` applies it) swaps width and height."""
    return img.getexif().get(_ORIENTATION, 1) in _SWAPPING


def load_image(data: bytes, cfg: IngestConfig) -> tuple[bytes, int, int] | R.Problem:
    """Decodes, checks and resizes one image file's bytes: (PNG bytes, width, height as shown, i.e. after its
    EXIF orientation) or the problem. Whatever decoding these bytes raises is a problem of the record."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the image is judged by its decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if min(width, height) < cfg.min_side:
                    return R.Problem(R.TOO_SMALL, f"{width}x{height} is below the minimum side {cfg.min_side}")
                if max(width, height) > cfg.max_side:
                    return R.Problem(R.TOO_LARGE, f"{width}x{height} is above the maximum side {cfg.max_side}")
                if max(width, height) / min(width, height) > cfg.max_aspect:
                    return R.Problem(R.BAD_ASPECT, f"aspect ratio of {width}x{height} exceeds {cfg.max_aspect}")
                frame = to_rgb_square(img, cfg.image_size, cfg.resize)
                if turned(img):  # stored upright: its size as stored
                    width, height = height, width
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return R.Problem(R.TOO_LARGE, f"decompression bomb guard: {exc}")
    except Exception as exc:  # Pillow raises many kinds on bad bytes (also ValueError, struct.error, ...)
        return decode_problem(data, exc)
    buf = io.BytesIO()
    frame.save(buf, format="PNG", optimize=False, compress_level=PNG_LEVEL)
    return buf.getvalue(), width, height


def decode_problem(data: bytes, exc: Exception) -> R.Problem:
    """`truncated` for an image cut short (Pillow says so, or the bytes begin as a known format but do not end as
    it), `undecodable` for anything else."""
    text = "" if isinstance(exc, UnidentifiedImageError) else str(exc)  # its text names a BytesIO at an address
    detail = f"{type(exc).__name__}: {text}" if text else "Pillow cannot identify it"
    if isinstance(exc, EOFError) or "truncated" in text or "broken data stream" in text:
        return R.Problem(R.TRUNCATED, f"image data ends early: {detail}")
    fmt = cut_short(data)
    if fmt is not None:
        return R.Problem(R.TRUNCATED, f"image data ends early: a {fmt} file truncated at {len(data)} bytes ({detail})")
    if isinstance(exc, UnidentifiedImageError):
        return R.Problem(R.UNDECODABLE, f"not an image Pillow can read: {_kind(data)}")
    return R.Problem(R.UNDECODABLE, detail)


def cut_short(data: bytes) -> str | None:
    """The format whose file `data` begins as a valid start of but does not end as (so it was cut), else None.

    JPEG: the start-of-image marker and a first segment marker, but no end-of-image marker. PNG: the signature and
    a complete IHDR chunk, but no IEND chunk. GIF: a complete header with a nonzero size, but no trailer.
    WebP, BMP: fewer bytes than the header's own size field.
    """
    if data[:3] == b"\xff\xd8\xff" and len(data) > 4 and b"\xff\xd9" not in data[-32:]:
        return "JPEG"
    if data[:8] == _PNG and data[8:16] == b"\x00\x00\x00\x0dIHDR" and len(data) >= 33 and b"IEND" not in data[-16:]:
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 13 and data[6:10].count(0) < 4 and data[-1:] != b";":
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) < int.from_bytes(data[4:8], "little") + 8:
        return "WebP"
    if data[:2] == b"BM" and len(data) >= 14 and len(data) < int.from_bytes(data[2:6], "little"):
        return "BMP"
    return None


def _kind(data: bytes) -> str:
    """What the first bytes are, for a message: their hex, or that there are none."""
    return f"{len(data)} bytes starting {data[:8].hex(' ')}" if data else "the file is empty"
