"""CSV/TSV and Parquet sources: detection, grouping, problem records, and malformed files."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.tabular import CsvSource, ParquetSource
from tests.mmcore.data.sources.sourcekit import CFG, captions, read_rows


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (37 * i % 256, 255 - 29 * i % 256, 61 * i % 256)).save(buf, "PNG")
    return buf.getvalue()


def _images(root: Path, *names: str) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(i + 1))






def test_csv_groups_rows_per_image_and_reports_bad_rows(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "raw"
    _images(root, "images/a.png", "images/b.png", "images/c.png", "images/d.png")
    lines = [b"image,caption,lang", b"images/a.png,a red square,en", "images/a.png,一个红色方块,".encode(),
             b'images/a.png,"a red, quoted ""square""",en', b"images/b.png,a green square,",
             b"images/b.png", b"images/b.png,another green one,en", b"images/c.png,caf\xe9 latin-1,en",
             b'images/c.png,"a caption', b'over two lines",en', b"", b"images/missing.png,nothing here,en",
             "images/d.png,蓝色的方块,zh".encode(), b'images/e.png,"never closed']
    (root / "captions.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")

    source = open_source(root)
    assert isinstance(source, CsvSource) and source.path == "captions.csv"
    assert isinstance(open_source(root / "captions.csv"), CsvSource)
    report = ingest(open_source(root, "csv"), out, CFG, workers=1)

    assert report.records_in == 8 == report.accepted + report.rejected
    assert report.accepted == 4
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert sorted(samples) == ["images/a.png", "images/b.png", "images/c.png", "images/d.png"]
    assert captions(samples["images/a.png"]) == [("en", "a red square"), ("en", 'a red, quoted "square"'),
                                                  ("zh", "一个红色方块")]
    assert captions(samples["images/b.png"]) == [("en", "a green square"), ("en", "another green one")]
    assert captions(samples["images/c.png"]) == [("en", "a caption\nover two lines")]
    assert captions(samples["images/d.png"]) == [("zh", "蓝色的方块")]
    rejects = {r["where"]: r["reason"] for r in read_rows(out, "rejects")}
    # the bad rows inside b's group follow it, so b's captions stay one record
    assert rejects == {"captions.csv line 6": "malformed", "captions.csv line 8": "bad_encoding",
                       "captions.csv line 12": "missing_file", "captions.csv line 14": "malformed"}
    assert {s["record"] for s in samples.values()} == {1, 2, 5, 7}

    again = ingest(open_source(root), out, CFG, workers=1)  # keys and digests are stable
    assert (again.kept, again.processed, again.accepted) == (8, 0, 4)


def test_tsv_without_header_is_positional_and_a_repeat_is_a_duplicate(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "raw"
    _images(root, "a.png", "b.png")
    (root / "labels.tsv").write_text("a.png\tone cat\na.png\t一只猫\nb.png\ttwo, dogs\ten\na.png\tagain\n",
                                     encoding="utf-8")
    (root / "other.csv").write_text("image,caption\na.png,x\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"2 CSV/TSV files \(labels.tsv, other.csv\)"):
        open_source(root)

    report = ingest(open_source(root / "labels.tsv"), out, CFG, workers=1)
    assert (report.records_in, report.accepted, report.rejected) == (3, 2, 1)
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert captions(samples["a.png"]) == [("en", "one cat"), ("zh", "一只猫")]
    assert captions(samples["b.png"]) == [("en", "two, dogs")]  # a comma is not a TSV delimiter
    assert [r["reason"] for r in read_rows(out, "rejects")] == ["duplicate"]


@pytest.mark.parametrize("content, expected", [
    ("file,caption\nx.png,a cat\n", r"bad\.csv line 1: the header \(file, caption\) has no image column"),
    ("image,lang\nx.png,en\n", r"bad\.csv line 1: .* has no caption column"),
    ("\nx.png\n", r"bad\.csv line 2: found 1 field"),
    ("", r"bad\.csv is empty"),
])
def test_csv_that_is_not_the_format_fails_before_reading(tmp_path, content, expected):
    (tmp_path / "bad.csv").write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        open_source(tmp_path / "bad.csv")


def test_parquet_bytes_column_with_ids_lang_and_qa(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "raw"
    root.mkdir()
    table = pa.table({
        "id": ["s1", "s2", "s3", "s4", "s5"],
        "image": pa.array([_png(1), _png(2), _png(3), None, b"not an image"], pa.binary()),
        "caption": ["a red square", "蓝色的方块", None, "x", "y"],
        "lang": ["en", None, None, None, None],
        "question": ["what color is it?", None, None, None, None],
        "answer": ["Red", None, None, None, None],
    })
    pq.write_table(table, root / "train.parquet", row_group_size=2)

    assert isinstance(open_source(root), ParquetSource)
    report = ingest(open_source(root / "train.parquet", "parquet"), out, CFG, workers=1)
    assert (report.records_in, report.accepted, report.rejected) == (5, 2, 3)
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert captions(samples["s1"]) == [("en", "a red square")]
    assert samples["s1"]["qa"] == [{"question": "what color is it?", "answer": "red", "type": "other", "answers": [],
                                    "answer_type": None, "question_type": None, "question_id": None}]
    assert captions(samples["s2"]) == [("zh", "蓝色的方块")]
    rejects = {r["sample_id"]: r["reason"] for r in read_rows(out, "rejects")}
    assert rejects == {"s3": "no_text", "s4": "missing_file", "s5": "undecodable"}


def test_parquet_folder_of_hf_structs_and_path_columns(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "raw"
    _images(root, "imgs/p.png", "imgs/q.png")
    (root / "data").mkdir()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": _png(9), "path": "x.png"},
                                                {"bytes": None, "path": "imgs/p.png"}], struct),
                             "text": ["one square", "二"]}), root / "data" / "train-0.parquet")
    pq.write_table(pa.table({"file_name": ["imgs/q.png", "imgs/q.png"],
                             "captions": pa.array([["first", "第二"], []], pa.list_(pa.string()))}),
                   root / "data" / "train-1.parquet")

    source = open_source(root)  # nothing at the top: found in the recursive listing
    assert isinstance(source, ParquetSource)
    assert source.annotation_files() == ["data/train-0.parquet", "data/train-1.parquet"]
    report = ingest(source, out, CFG, workers=1)
    assert (report.records_in, report.accepted, report.rejected) == (4, 3, 1)
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert captions(samples["data/train-0.parquet#1"]) == [("en", "one square")]
    assert samples["data/train-0.parquet#1"]["image_path"] == "x.png"
    assert captions(samples["data/train-0.parquet#2"]) == [("zh", "二")]
    assert samples["data/train-0.parquet#2"]["image_path"] == "imgs/p.png"
    assert captions(samples["data/train-1.parquet#1"]) == [("en", "first"), ("zh", "第二")]
    rejects = read_rows(out, "rejects")
    assert [(r["sample_id"], r["reason"], r["where"]) for r in rejects] == [
        ("data/train-1.parquet#2", "no_text", "data/train-1.parquet row 2")]


@pytest.mark.parametrize("table, expected", [
    (pa.table({"picture": [b"x"], "caption": ["a"]}), r"no image column; columns found: picture, caption\. "
                                                      r"Expected an image column \(image / image_path"),
    (pa.table({"image": [b"x"], "label": [3]}), r"no text column; columns found: image, label"),
    (pa.table({"image": [b"x"], "caption": [3]}), r"column 'caption' has type int64; expected string"),
    (None, r"is not a Parquet file"),
])
def test_parquet_that_is_not_the_format_fails_before_reading(tmp_path, table, expected):
    path = tmp_path / "bad.parquet"
    if table is None:
        path.write_text("image,caption\n", encoding="utf-8")
    else:
        pq.write_table(table, path)
    with pytest.raises(SourceError, match=r"bad\.parquet.*" + expected):
        open_source(tmp_path, "parquet")
