"""Bad records that used to stop a whole ingest, or came out with the wrong reason or a message that changed from
run to run: each is one rejection with its reason and where it is, and identical runs write identical rejects."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.ingest import decode, ingest, process_record
from mmcore.data.records import ANNOTATIONS
from mmcore.data.sources import open_source
from mmcore.data.storage import Unreadable
from tests.mmcore.data.ingest.ingestkit import EVERY_KIND_CFG, rows, write_every_kind
from tests.mmcore.data.sources.sourcekit import solid_png

CFG = IngestConfig(image_size=16, min_side=8, shard_size=4, vocab_size=64)


def _jsonl(root: Path, records: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ANNOTATIONS).write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return root


def _rejects(report) -> dict[str, dict]:
    return {r["sample_id"]: r for r in rows(report, "rejects")}


def test_a_path_no_file_can_have_is_a_bad_path_not_the_end_of_the_run(tmp_path):
    """A JSON "\\u0000" in a path raised "ValueError: embedded null byte", a name over 255 bytes "OSError: [Errno
    36] File name too long", a symlink loop "RuntimeError: Symlink loop", each after the retries, with no shard."""
    root = tmp_path / "raw"
    solid_png(root / "images" / "good.png", (200, 30, 30))
    os.symlink("loop.png", root / "images" / "loop.png")
    _jsonl(root, [{"id": "good", "image": "images/good.png", "captions": {"en": ["a red square"]}},
                  {"id": "nul", "image": "images/good\u0000.png", "captions": {"en": ["x"]}},
                  {"id": "long", "image": "images/" + "n" * 300 + ".png", "captions": {"en": ["x"]}},
                  {"id": "deep", "image": "images/" + "d/" * 3000 + "x.png", "captions": {"en": ["x"]}},
                  {"id": "loop", "image": "images/loop.png", "captions": {"en": ["x"]}}])
    report = ingest(open_source(root), ProcessedDir(tmp_path / "out"), CFG)
    assert (report.records_in, report.accepted, report.rejected) == (5, 1, 4)
    rejects = _rejects(report)
    assert {k: (r["reason"], r["where"]) for k, r in rejects.items()} == {
        "nul": ("bad_path", f"{ANNOTATIONS} line 2"), "long": ("bad_path", f"{ANNOTATIONS} line 3"),
        "deep": ("bad_path", f"{ANNOTATIONS} line 4"), "loop": ("bad_path", f"{ANNOTATIONS} line 5")}
    assert rejects["nul"]["message"] == "'images/good\\x00.png' holds a NUL byte: no file name can"
    assert rejects["long"]["message"].endswith("... (311 characters) cannot name a file: File name too long")
    assert rejects["long"]["image_path"] == "images/" + "n" * 300 + ".png"  # the row keeps the whole path
    assert "Symlink loop" in rejects["loop"]["message"]


def test_json_the_parser_cannot_take_and_lone_surrogates_are_rejected(tmp_path):
    root = _jsonl(tmp_path / "raw", [{"id": "sur", "image": "images/\udc80.png", "captions": {"en": ["x"]}},
                                     {"id": "\udcff", "image": "images/a.png", "captions": {"en": ["x"]}}])
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write("[" * 100_000 + "\n" + '{"image": ' + "7" * 5000 + "}\n")
    report = ingest(open_source(root), ProcessedDir(tmp_path / "out"), CFG)
    got = [(r["record"], r["sample_id"], r["reason"]) for r in rows(report, "rejects")]
    assert got == [(1, "sur", "bad_encoding"), (2, "\\udcff", "bad_encoding"),
                   (3, f"{ANNOTATIONS}:3", "malformed"), (4, f"{ANNOTATIONS}:4", "malformed")]
    messages = [r["message"] for r in rows(report, "rejects")]
    assert messages[0].startswith(f"{ANNOTATIONS} line 1 (image 'images/\\udc80.png'): holds text that is not valid")
    assert "RecursionError" in messages[2] and "4300 digits" in messages[3]


def test_a_utf16_csv_read_as_utf8_is_rejected_line_by_line(tmp_path):
    """UTF-16 read as UTF-8 is ASCII with NUL bytes between: each line a bad_encoding, never a path with a NUL."""
    root = tmp_path / "raw"
    solid_png(root / "images" / "a.png", (10, 200, 10))
    (root / "captions.csv").write_text("image,caption\nimages/a.png,a green square\nimages/a.png,green\n",
                                       encoding="utf-16")
    report = ingest(open_source(root), ProcessedDir(tmp_path / "out"), CFG)
    assert (report.records_in, report.accepted, report.rejected) == (4, 0, 4)
    got = [(r["where"], r["reason"]) for r in rows(report, "rejects")]
    assert got == [(f"captions.csv line {n}", "bad_encoding") for n in (1, 2, 3, 4)]
    assert "a NUL byte at byte 0 (UTF-16?)" in rows(report, "rejects")[1]["message"]


def test_a_csv_caption_over_the_csv_field_limit_is_text_too_long_with_its_image_path(tmp_path):
    root = tmp_path / "raw"
    solid_png(root / "images" / "a.png", (10, 200, 10))
    solid_png(root / "images" / "b.png", (10, 20, 200))
    (root / "captions.csv").write_text(f'image,caption\nimages/a.png,"{"x" * 140_000}"\nimages/b.png,blue\n',
                                       encoding="utf-8")
    report = ingest(open_source(root), ProcessedDir(tmp_path / "out"), CFG)
    assert (report.records_in, report.accepted, report.rejected) == (2, 1, 1)
    (reject,) = rows(report, "rejects")
    assert (reject["reason"], reject["image_path"], reject["where"]) == ("text_too_long", "images/a.png",
                                                                         "captions.csv line 2")
    assert reject["message"] == f"captions.en[0] has 140000 characters, limit {CFG.max_text_chars}"


def test_reject_shards_are_byte_identical_across_identical_runs(tmp_path):
    """Every kind of bad record, ingested twice (in this process, then by two decoding processes) from the same
    source into two folders: the same reject shards, byte for byte, with no memory address in any message."""
    root, _ = write_every_kind(tmp_path)
    one, two = ProcessedDir(tmp_path / "one"), ProcessedDir(tmp_path / "two")
    first = ingest(open_source(root), one, EVERY_KIND_CFG, workers=1)
    ingest(open_source(root), two, EVERY_KIND_CFG, workers=2)
    names = sorted(p.name for p in one.path.glob("rejects-*.parquet"))
    assert len(names) == 5 and names == sorted(p.name for p in two.path.glob("rejects-*.parquet"))
    assert [(one.path / n).read_bytes() for n in names] == [(two.path / n).read_bytes() for n in names]
    assert not [r["message"] for r in rows(first, "rejects") if " at 0x" in r["message"]]
    files = lambda d: {p.name: p.read_bytes() for p in sorted(d.path.iterdir()) if p.is_file()}  # noqa: E731
    assert files(one) == files(two)  # the sample and token shards too


def test_a_file_that_cannot_be_read_is_unreadable(tmp_path, monkeypatch):
    class Denied:
        def read_bytes(self, rel: str) -> bytes:
            raise Unreadable(errno.EACCES, f"{rel} cannot be read: Permission denied")

    monkeypatch.setattr(decode, "_storage", lambda uri: Denied())
    rec = R.SourceRecord(1, "a", "line 1", R.Annotation(image="a.png", captions={"en": ["x"]}))
    row = process_record(str(tmp_path), CFG, rec, "a")
    assert (row["reason"], row["message"], row["where"]) == ("unreadable", "a.png cannot be read: Permission denied",
                                                             "line 1")


def test_a_failure_outside_the_record_stops_the_run_naming_the_record(tmp_path, monkeypatch):
    """An object store that does not answer is no property of the record: the shard task fails (and is retried),
    its error naming the record instead of a bare "embedded null byte"."""
    def unreachable(uri: str, image: str) -> bytes:
        raise OSError("When reading information for key 'a.png': AWS Error NETWORK_CONNECTION")

    monkeypatch.setattr(decode, "read_image", unreachable)
    rec = R.SourceRecord(7, "a", f"{ANNOTATIONS} line 7", R.Annotation(image="a.png", captions={"en": ["x"]}))
    with pytest.raises(decode.RecordError, match=rf"^{ANNOTATIONS} line 7 \(image 'a.png'\): OSError: When reading"):
        process_record("s3://bucket/raw", CFG, rec, "a")
