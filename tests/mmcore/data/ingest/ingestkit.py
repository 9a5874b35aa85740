"""What the ingest tests share: two small source datasets (one with a bad record of every kind, one of
numbered solid-colour images) and readers of what an ingest wrote."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.records import ANNOTATIONS
from mmcore.data.shards import read_tables

EVERY_KIND_RECORDS = 12 + 13 + 1 + 1 + 1 + 1 + 5  # good + bad + not JSON + palette + repeated id + latin-1 + paths
# and bytes that no run before the data layer's hardening survived or rejected reproducibly (write_every_kind)
NOT_IN_JSONL = ("orphan", "unreadable")  # reasons of formats with ids (COCO, VQA), of files root cannot read
EVERY_KIND_ACCEPTED = 13  # the 12 good ones and the palette image
EVERY_KIND_CFG = IngestConfig(image_size=32, shard_size=7, min_side=16, max_side=512, max_aspect=3.0,
                              max_text_chars=200)  # limits that the bad records of write_every_kind break


def _good(i: int) -> dict:
    return {"id": f"g{i}", "image": f"images/g{i}.png", "captions": {"en": [f"a red circle number {i}"],
                                                                     "zh": ["一个红色圆形"]},
            "qa": [{"question": "what color is the circle?", "answer": "Red", "type": "color"}]}


def bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side x side pixels: trips Pillow's decompression-bomb guard."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", side, side) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def write_every_kind(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """12 good records and at least one bad record per rejection reason under tmp_path/raw (and a file
    outside it); returns the root and the expected reason of each bad record by id."""
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(12):
        Image.new("RGB", (40, 40), (200, 10 * i, 30)).save(root / "images" / f"g{i}.png")
        lines.append(json.dumps(_good(i), ensure_ascii=False))
    Image.new("RGB", (8, 8)).save(root / "images" / "tiny.png")
    Image.new("RGB", (600, 400)).save(root / "images" / "huge.png")
    Image.new("RGB", (200, 40)).save(root / "images" / "wide.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    jpeg = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpeg, "JPEG")
    (root / "images" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "images" / "bomb.png").write_bytes(bomb_png())
    shutil.copy(root / "images" / "g3.png", root / "images" / "copy_of_g3.png")
    Image.new("P", (40, 40)).save(root / "images" / "palette.png")  # accepted: converted to RGB
    (tmp_path / "secret.png").write_bytes((root / "images" / "g0.png").read_bytes())
    bad = {
        "b_missing": {"image": "images/nope.png", "captions": {"en": ["x"]}},
        "b_broken": {"image": "images/broken.png", "captions": {"en": ["x"]}},
        "b_cut": {"image": "images/cut.jpg", "captions": {"en": ["x"]}},
        "b_tiny": {"image": "images/tiny.png", "captions": {"en": ["x"]}},
        "b_huge": {"image": "images/huge.png", "captions": {"en": ["x"]}},
        "b_bomb": {"image": "images/bomb.png", "captions": {"en": ["x"]}},
        "b_wide": {"image": "images/wide.png", "captions": {"en": ["x"]}},
        "b_empty": {"image": "images/g1.png", "captions": {"en": ["   "]}},
        "b_long": {"image": "images/g1.png", "captions": {"en": ["y" * 201]}},
        "b_notext": {"image": "images/g1.png"},
        "b_outside": {"image": "../secret.png", "captions": {"en": ["x"]}},
        "b_schema": {"image": "images/g1.png", "captions": {"en": ["x"]}, "colour": "red"},
        "b_same_bytes": {"image": "images/copy_of_g3.png", "captions": {"en": ["another caption"]}},
    }
    reasons = {"b_missing": "missing_file", "b_broken": "undecodable", "b_cut": "truncated", "b_tiny": "too_small",
               "b_huge": "too_large", "b_bomb": "too_large", "b_wide": "bad_aspect", "b_empty": "empty_text",
               "b_long": "text_too_long", "b_notext": "no_text", "b_outside": "outside_root",
               "b_schema": "malformed", "b_same_bytes": "duplicate"}
    for key, rec in bad.items():
        lines.append(json.dumps({"id": key, **rec}))
    lines.append("{this is not json")
    lines.append("")  # blank lines are not records
    lines.append(json.dumps({"id": "palette", "image": "images/palette.png", "captions": {"en": ["dark"]}}))
    lines.append(json.dumps({"id": "g5", "image": "images/g5.png", "captions": {"en": ["same id again"]}}))
    data = ("\n".join(lines) + "\n").encode()
    data += '{"id": "latin1", "image": "images/g2.png", "captions": {"en": ["caf\xe9"]}}\n'.encode("latin-1")
    (root / "images" / "noise.png").write_bytes(bytes(range(256)) * 4)
    (root / "images" / "header_cut.jpg").write_bytes(jpeg.getvalue()[:150])
    hostile = {  # each stopped a whole run, or was rejected with a message that differed between runs
        "b_nul": ("images/g1\u0000.png", "bad_path"), "b_long_name": ("images/" + "n" * 300 + ".png", "bad_path"),
        "b_surrogate": ("images/\udc80.png", "bad_encoding"), "b_noise": ("images/noise.png", "undecodable"),
        "b_header_cut": ("images/header_cut.jpg", "truncated")}
    for key, (image, reason) in hostile.items():
        data += (json.dumps({"id": key, "image": image, "captions": {"en": ["x"]}}) + "\n").encode()
        reasons[key] = reason
    (root / ANNOTATIONS).write_bytes(data)
    return root, reasons


def write_numbered(root: Path, ids: range, side: int = 24, missing: tuple[int, ...] = ()) -> None:
    """Records img{i} with a distinct solid colour each; `missing` ones reference no file yet."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in ids:
        if i not in missing:
            Image.new("RGB", (side, side), (i % 256, i // 256, 7)).save(root / f"images/{i}.png")
        lines.append(json.dumps({"id": f"img{i}", "image": f"images/{i}.png", "captions": {"en": [f"image {i}"]}}))
    (root / ANNOTATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def files(out: ProcessedDir) -> dict[str, bytes]:
    """Every file in the folder by name."""
    return {p.name: p.read_bytes() for p in sorted(out.path.iterdir())}


def rows(report, kind: str) -> list[dict]:
    """The rows of the live `kind` ("samples" or "rejects") shards of a report, in shard order."""
    return read_tables([getattr(s, f"{kind}_path") for s in report.shards]).to_pylist()
