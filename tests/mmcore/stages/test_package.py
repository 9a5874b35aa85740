"""The test-split digest the champion gate compares: it changes only with the content of that split."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.catalog import ProcessedDir, shard_name
from mmcore.io import write_json
from mmcore.stages.package import split_digest

SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("split", pa.string()), ("image", pa.binary()),
    ("captions", pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))),
    ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string())]))),
])


def _processed(root: Path, rows: list[dict]) -> ProcessedDir:
    """Two sample shards (rows 0-1 and 2-3) and the manifest that lists them."""
    processed = ProcessedDir(root)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    root.mkdir(parents=True)
    pq.write_table(table.slice(0, 2), processed.samples(0))
    pq.write_table(table.slice(2), processed.samples(1))
    write_json(processed.manifest, {"shards": [{"samples": shard_name("samples", i)} for i in (0, 1)]})
    return processed


def _rows(**change: str) -> list[dict]:
    rows = [{"sample_id": f"s{i}", "split": "test" if i % 2 else "train", "image": f"png{i}".encode(),
             "captions": [{"lang": "en", "text": f"caption {i}"}], "qa": []} for i in range(4)]
    for key, value in change.items():  # e.g. s1="new caption": edit that sample's caption
        next(r for r in rows if r["sample_id"] == key)["captions"][0]["text"] = value
    return rows


def test_split_digest_changes_only_with_the_split_content(tmp_path):
    a = _processed(tmp_path / "a", _rows())
    base = split_digest(a)
    assert len(base) == 64 and base == split_digest(a, "test")  # the test split by default
    assert base == split_digest(_processed(tmp_path / "b", _rows()))  # the same content elsewhere
    assert base == split_digest(_processed(tmp_path / "c", _rows(s0="edited train caption")))  # s0 is train
    assert base != split_digest(_processed(tmp_path / "d", _rows(s1="edited test caption")))
    new_image = _rows()
    new_image[3]["image"] = b"another png"  # s3 is test
    assert base != split_digest(_processed(tmp_path / "e", new_image))
    assert base != split_digest(a, "train")
