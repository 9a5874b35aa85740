"""The ingest benchmark's synthetic datasets, generated once with fixed seeds and cached under --work
(generation is not timed): photo-like JPEGs for the throughput, tiny distinct PNGs for the peak memory."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import log

PHOTO_W, PHOTO_H = 640, 480


def _photo(rng: np.random.Generator) -> Image.Image:
    """A 640x480 photo-like image: smooth colour blobs, a gradient, mid-frequency texture and grain."""
    h, w = PHOTO_H, PHOTO_W
    coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(4, 12)), 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    mid = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    arr += (np.asarray(Image.fromarray(mid).resize((w, h), Image.Resampling.BILINEAR), np.float32) - 128) * 0.25
    arr += np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-50, 50, 3).astype(np.float32)
    arr += np.linspace(-1, 1, h, dtype=np.float32)[:, None, None] * rng.uniform(-50, 50, 3).astype(np.float32)
    arr += rng.standard_normal((h, w, 3), dtype=np.float32) * 5.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _annotation(i: int, image: str) -> str:
    return json.dumps({"id": f"{i:06d}", "image": image, "captions": {"en": [f"synthetic picture number {i}"]}})


def photo_dataset(work: Path, n: int) -> Path:
    """`n` distinct photo-like JPEGs in the canonical layout, generated once (seed 0) and cached."""
    root = work / f"photos-{n}-{PHOTO_W}x{PHOTO_H}-v1"
    done = work / f"{root.name}.complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    lines = []
    for i in range(n):
        rel = f"images/{i:06d}.jpg"
        _photo(rng).save(root / rel, format="JPEG", quality=90)
        lines.append(_annotation(i, rel))
        if (i + 1) % 500 == 0:
            log(f"  generated {i + 1}/{n} JPEGs")
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    log(f"  {n} JPEGs generated in {time.perf_counter() - t0:.0f} s")
    done.touch()
    return root


def tiny_dataset(work: Path, sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    """max(sizes) distinct 16x16 PNGs under one root, and one annotation file per size (its first n lines)."""
    n = max(sizes)
    root = work / f"tiny-{n}-v1"
    done = work / f"{root.name}.complete"
    files = {s: root / f"ann-{s}.jsonl" for s in sizes}
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        lines = []
        for i in range(n):
            rel = f"images/{i // 1000:04d}/{i:07d}.png"
            if i % 1000 == 0:
                (root / rel).parent.mkdir(parents=True)
            px = rng.integers(0, 256, 16 * 16 * 3, dtype=np.uint8)
            px[:4] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)  # every image differs: dedupe keeps all
            buf = io.BytesIO()
            Image.frombytes("RGB", (16, 16), px.tobytes()).save(buf, format="PNG")
            (root / rel).write_bytes(buf.getvalue())
            lines.append(_annotation(i, rel))
            if (i + 1) % 20000 == 0:
                log(f"  generated {i + 1}/{n} tiny PNGs")
        (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
        (root / "lines.json").write_text(json.dumps(n))
        log(f"  {n} tiny PNGs generated in {time.perf_counter() - t0:.0f} s")
        done.touch()
    lines = None
    for s, path in files.items():
        if not path.exists():
            if lines is None:
                lines = (root / "annotations.jsonl").read_text().splitlines()
            path.write_text("\n".join(lines[:s]) + "\n")
    return root, files
