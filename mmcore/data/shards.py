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

# A question; `answers` holds the human answers (VQA v2: ten; empty for single-answer data), the types and the
# question id (as text) are null where the data has none.
QA_TYPE = pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string()),
                     ("answers", pa.list_(pa.string())), ("answer_type", pa.string()),
                     ("question_type", pa.string()), ("question_id", pa.string())])

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
    ("qa", pa.list_(QA_TYPE)),
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


def vector_type(width: int) -> pa.DataType:
    """A float32 vector of `width` values stored as fixed-size little-endian bytes.

    Parquet decodes this several times faster than a FixedSizeList<float32> of the same values, and a
    column of them can be viewed as an (N, width) array without a copy (BENCHMARKS.md, "Feature shards").
    """
    return pa.binary(width * 4)


def features_schema(embed_dim: int, pooled_dim: int, grid_dim: int, cells: int) -> pa.Schema:
    return pa.schema([
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("image_embedding", vector_type(embed_dim)),
        ("image_pooled", vector_type(pooled_dim)),
        ("image_grid", vector_type(grid_dim * cells)),  # (G, g*g) row-major
        ("text_embeddings", pa.list_(vector_type(embed_dim))),  # one per caption
        ("caption_langs", pa.list_(pa.string())),
    ])


def write_table(path: str | Path, table: pa.Table, metadata: dict[str, Any] | None = None) -> Path:
    """Writes a Parquet file atomically; `metadata` goes into the file's key-value metadata."""
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"mmcore"] = json.dumps(metadata, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    options: dict[str, Any] = {"compression": "zstd"}
    vector_columns = {f.name for f in table.schema if _holds_vectors(f.type)}
    if vector_columns:
        # Float bytes are stored plain: uncompressed they read ~10x faster than zstd for a file ~1.7x the
        # size (BENCHMARKS.md), and dictionaries and min/max statistics of unique vectors only cost time.
        plain = [name for name in table.column_names if name not in vector_columns]
        options = {"compression": {name: "none" if name in vector_columns else "zstd" for name in table.column_names},
                   "use_dictionary": plain, "write_statistics": plain}
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)
    return Path(path)


def _holds_vectors(dtype: pa.DataType) -> bool:
    if pa.types.is_list(dtype):
        dtype = dtype.value_type
    return pa.types.is_fixed_size_binary(dtype)


def read_metadata(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[b"mmcore"]) if b"mmcore" in meta else {}


def read_tables(paths: list[str | Path], columns: list[str] | None = None) -> pa.Table:
    tables = [_current(pq.read_table(p, columns=columns)) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def _current(table: pa.Table) -> pa.Table:
    """A sample shard written before qa items had `answers` and the types reads as if it had them (null), so
    it concatenates with newer shards (caption-only records keep their digests, and their shards stay)."""
    i, want = table.schema.get_field_index("qa"), SAMPLES.field("qa").type
    if i >= 0 and table.schema.field(i).type != want:
        return table.set_column(i, "qa", table.column(i).cast(want))
    return table


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (3, H, W) uint8, the layout the image encoders take."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()


def vectors(matrix: np.ndarray) -> pa.Array:
    """(N, W) float -> a column of N vectors (vector_type(W)), sharing the matrix's memory."""
    m = np.ascontiguousarray(matrix, dtype="<f4")
    if m.ndim != 2:
        raise ValueError(f"expected an (N, W) matrix, got shape {m.shape}")
    return pa.Array.from_buffers(vector_type(m.shape[1]), len(m), [None, pa.py_buffer(m)])


def vector_lists(flat: np.ndarray, counts: list[int]) -> pa.Array:
    """(sum(counts), W) float -> a list<vector> column: row i holds the next counts[i] vectors."""
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), vectors(flat))


def vectors_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A vector column (vector_type) -> (N, W) float32.

    A single chunk is viewed in place, without a copy (read-only); several chunks are concatenated.
    """
    if isinstance(column, pa.ChunkedArray):
        parts = [vectors_to_numpy(chunk) for chunk in column.chunks]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.zeros((0, column.type.byte_width // 4), np.float32)
        return np.concatenate(parts)
    if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width % 4:
        raise TypeError(f"expected a float32 vector column, got {column.type}")
    if column.null_count:
        raise ValueError(f"vector column has {column.null_count} missing values")
    width = column.type.byte_width // 4
    data = np.frombuffer(column.buffers()[1], dtype="<f4", count=(column.offset + len(column)) * width)
    return data[column.offset * width :].reshape(-1, width)


def vector_lists_to_numpy(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """A list<vector> column -> one (n_i, W) float32 array per row."""
    if isinstance(column, pa.ChunkedArray):
        return [rows for chunk in column.chunks for rows in vector_lists_to_numpy(chunk)]
    flat = vectors_to_numpy(column.flatten())
    offsets = column.offsets.to_numpy()
    return [flat[a - offsets[0] : b - offsets[0]] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
