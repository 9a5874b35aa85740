"""Vector columns: float32 matrices stored as fixed-size bytes per row, read back exactly and fast."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.data.shards import (
    read_metadata,
    vector_lists,
    vector_lists_to_numpy,
    vectors,
    vectors_to_numpy,
    write_table,
)


def test_vectors_round_trip_through_parquet_exactly(tmp_path):
    m = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    per_row = [m[:2], m[2:2], m[2:5]]  # 2, 0 and 3 vectors
    table = pa.table({"id": [str(i) for i in range(50)], "v": vectors(m)})
    lists = pa.table({"l": vector_lists(m[:5], [2, 0, 3])})
    write_table(tmp_path / "v.parquet", table, {"cells": 4})
    write_table(tmp_path / "l.parquet", lists)
    back = pq.read_table(tmp_path / "v.parquet")
    assert np.array_equal(vectors_to_numpy(back["v"]), m) and read_metadata(tmp_path / "v.parquet") == {"cells": 4}
    assert np.array_equal(vectors_to_numpy(back["v"].combine_chunks().slice(10, 5)), m[10:15])  # offsets honoured
    got = vector_lists_to_numpy(pq.read_table(tmp_path / "l.parquet")["l"])
    assert [g.shape for g in got] == [(2, 7), (0, 7), (3, 7)]
    assert all(np.array_equal(g, want) for g, want in zip(got, per_row, strict=True))
    meta = pq.ParquetFile(tmp_path / "v.parquet").metadata.row_group(0)
    assert "RLE_DICTIONARY" not in meta.column(1).encodings  # unique float bytes are not worth a dictionary
    assert (meta.column(0).compression, meta.column(1).compression) == ("ZSTD", "UNCOMPRESSED")


def test_wrong_columns_are_clear_errors():
    with pytest.raises(TypeError, match="float32 vector column"):
        vectors_to_numpy(pa.array(["a", "b"]))
    with pytest.raises(ValueError, match="shape"):
        vectors(np.zeros(3, np.float32))


def test_sample_shards_from_before_qa_had_answers_read_with_newer_ones(tmp_path):
    from mmcore.data.shards import SAMPLES, read_tables

    old_qa = pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string())]))
    qa = {"question": "what?", "answer": "red", "type": "color"}
    write_table(tmp_path / "old.parquet", pa.table({"sample_id": ["a", "b"], "qa": pa.array([[qa], []], old_qa)}))
    new = {**qa, "answers": ["red", "pink"], "answer_type": "other", "question_type": "what", "question_id": "7"}
    new_qa = SAMPLES.field("qa").type
    write_table(tmp_path / "new.parquet", pa.table({"sample_id": ["c"], "qa": pa.array([[new]], new_qa)}))
    both = read_tables([tmp_path / "old.parquet", tmp_path / "new.parquet"], ["sample_id", "qa"])
    old = {**qa, "answers": None, "answer_type": None, "question_type": None, "question_id": None}
    assert both["qa"].to_pylist() == [[old], [], [new]]
