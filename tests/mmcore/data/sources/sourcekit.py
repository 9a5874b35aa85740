"""What the reader tests share: a tiny ingest config and small fixture writers and readers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig

CFG = IngestConfig(image_size=16, min_side=8, shard_size=4, vocab_size=64)


def solid_png(path: Path, colour: tuple[int, int, int]) -> None:
    """A 32x32 image of one colour: distinct colours keep images from being duplicates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path, format="PNG")


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def read_rows(out: ProcessedDir, kind: str) -> list[dict]:
    """All rows of the `kind` ("samples" or "rejects") shards in `out`, in shard order."""
    return pa.concat_tables([pq.read_table(p) for p in out.shard_files(kind).values()]).to_pylist()


def captions(sample: dict) -> list[tuple[str, str]]:
    return [(c["lang"], c["text"]) for c in sample["captions"]]
