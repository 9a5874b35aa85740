"""Parquet schemas of the sample, token, reject and feature shards, and how they are written and read."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmcore.io import atomic_path

SAMPLES = pa.schema([
    ("sample_id", pa.string()),
    ("record", pa.int64()),  # 1-based position in the source when it was ingested
    ("record_key", pa.string()),  # identity for incremental ingest: the sample id (+ "#n" for a repeated id)
    ("record_digest", pa.string()),  # digest of the record as read: an edited record is re-ingested
    ("image_path", pa.string()),  # relative to the dataset root, as in the annotations
    ("image_sha256", pa.string()),  # digest of the source file bytes: the split key
    ("split", pa.string()),
    ("width", pa.int32()),  # of the source image, before resizing
    ("height", pa.int32()),
    ("image", pa.binary()),  # resized RGB image, PNG-encoded (lossless)
    ("captions", pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))),
    ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string())]))),
])

TOKENS = pa.schema([
    ("sample_id", pa.string()),
    ("caption_ids", pa.list_(pa.list_(pa.int32()))),  # aligned with SAMPLES.captions
    ("question_ids", pa.list_(pa.list_(pa.int32()))),  # aligned with SAMPLES.qa
])

REJECTS = pa.schema([
    ("record", pa.int64()),  # 1-based position in the source
    ("sample_id", pa.string()),
    ("record_key", pa.string()),
    ("record_digest", pa.string()),
    ("where", pa.string()),  # where a person finds the record, e.g. "annotations.jsonl line 12"
    ("image_path", pa.string()),
    ("reason", pa.string()),  # one of mmcore.data.records.REASONS
    ("message", pa.string()),
    ("duplicate_of", pa.string()),  # for reason "duplicate": the sample id of the record that was kept
])


def features_schema(embed_dim: int, pooled_dim: int, grid_dim: int, cells: int) -> pa.Schema:
    return pa.schema([
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("image_embedding", pa.list_(pa.float32(), embed_dim)),
        ("image_pooled", pa.list_(pa.float32(), pooled_dim)),
        ("image_grid", pa.list_(pa.float32(), grid_dim * cells)),  # (G, g*g) row-major
        ("text_embeddings", pa.list_(pa.list_(pa.float32(), embed_dim))),  # one per caption
        ("caption_langs", pa.list_(pa.string())),
    ])


def write_table(path: str | Path, table: pa.Table, metadata: dict[str, Any] | None = None) -> Path:
    """Writes a Parquet file atomically; `metadata` goes into the file's key-value metadata."""
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"mmcore"] = json.dumps(metadata, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[b"mmcore"]) if b"mmcore" in meta else {}


def read_tables(paths: list[str | Path], columns: list[str] | None = None) -> pa.Table:
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (3, H, W) uint8, the layout the image encoders take."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A FixedSizeList<float32> column -> (N, width) float32 without going through Python lists."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
