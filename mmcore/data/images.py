"""Decoding, checking and resizing one image: any file Pillow reads -> a size x size RGB PNG."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmcore.config import IngestConfig
from mmcore.data import records as R

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


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


def to_rgb_square(img: Image.Image, size: int) -> Image.Image:
    """Orientation applied, first frame, any mode to RGB, resized to size x size: the one preprocessing."""
    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale (1/2, 1/4, 1/8) directly, much faster
    frame = to_rgb(ImageOps.exif_transpose(img))  # an animated image is at its first frame after open
    return frame.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def load_image(data: bytes, cfg: IngestConfig) -> tuple[bytes, int, int] | R.Problem:
    """Decodes, checks and resizes one image file's bytes: (PNG bytes, source width, height) or the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if min(width, height) < cfg.min_side:
                    return R.Problem(R.TOO_SMALL, f"{width}x{height} is below the minimum side {cfg.min_side}")
                if max(width, height) > cfg.max_side:
                    return R.Problem(R.TOO_LARGE, f"{width}x{height} is above the maximum side {cfg.max_side}")
                if max(width, height) / min(width, height) > cfg.max_aspect:
                    return R.Problem(R.BAD_ASPECT, f"aspect ratio of {width}x{height} exceeds {cfg.max_aspect}")
                frame = to_rgb_square(img, cfg.image_size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return R.Problem(R.TOO_LARGE, f"decompression bomb guard: {exc}")
    except UnidentifiedImageError as exc:
        return R.Problem(R.UNDECODABLE, f"not an image Pillow can read: {exc}")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if isinstance(exc, EOFError) or "truncated" in text or "broken data stream" in text:
            return R.Problem(R.TRUNCATED, f"image data ends early: {type(exc).__name__}: {text}")
        return R.Problem(R.UNDECODABLE, f"{type(exc).__name__}: {text}")
    buf = io.BytesIO()
    frame.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), width, height
