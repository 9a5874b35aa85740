"""WebDataset source: tar shards of key.<image> + key.txt / key.json members."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.webdataset import WebDatasetSource
from tests.mmcore.data.sources.sourcekit import CFG, captions, read_rows


def _image(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (37 * i % 256, 255 - 29 * i % 256, 61 * i % 256)).save(buf, fmt)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()






def test_shards_of_samples_with_every_problem(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "raw"
    _tar(root / "shard-000.tar", [
        ("000.jpg", _image(1, "JPEG")), ("000.txt", "a red square\n\n一个红色方块\n".encode()),
        ("001.png", _image(2)), ("001.json", _json({"captions": {"en": ["a green square"]},
                                                    "qa": [{"question": "what color?", "answer": "Green"}]})),
        ("002.png", _image(3)), ("002.json", _json({"caption": "蓝色", "url": "http://x"})),
        ("003.png", _image(4)),  # no text
        ("004.txt", b"a caption without its image"),
        ("005.png", _image(5)), ("005.json", b"{not json"),
        ("006.png", _image(6)), ("006.txt", "café".encode("latin-1")),
    ])
    _tar(root / "shard-001.tar.gz", [("sub/x.png", _image(7)), ("sub/x.json", _json({"text": "a yellow square"}))],
         mode="w:gz")

    source = open_source(root)
    assert isinstance(source, WebDatasetSource)
    assert source.annotation_files() == ["shard-000.tar", "shard-001.tar.gz"]
    report = ingest(open_source(root, "webdataset"), out, CFG, workers=1)
    assert report.records_in == 8 == report.accepted + report.rejected
    assert report.accepted == 4
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert sorted(samples) == ["shard-000.tar/000", "shard-000.tar/001", "shard-000.tar/002",
                               "shard-001.tar.gz/sub/x"]
    assert captions(samples["shard-000.tar/000"]) == [("en", "a red square"), ("zh", "一个红色方块")]
    assert samples["shard-000.tar/000"]["image_path"] == "000.jpg"
    assert captions(samples["shard-000.tar/001"]) == [("en", "a green square")]
    assert samples["shard-000.tar/001"]["qa"] == [{"question": "what color?", "answer": "green", "type": "other",
                                                   "answers": [], "answer_type": None, "question_type": None,
                                                   "question_id": None}]
    assert captions(samples["shard-000.tar/002"]) == [("zh", "蓝色")]
    assert captions(samples["shard-001.tar.gz/sub/x"]) == [("en", "a yellow square")]
    rejects = {r["sample_id"]: r["reason"] for r in read_rows(out, "rejects")}
    assert rejects == {"shard-000.tar/003": "no_text", "shard-000.tar/004": "missing_file",
                       "shard-000.tar/005": "malformed", "shard-000.tar/006": "bad_encoding"}

    again = ingest(open_source(root), out, CFG, workers=1)  # keys and digests are stable
    assert (again.kept, again.processed, again.accepted) == (8, 0, 4)


def test_shard_cut_short_ends_with_a_malformed_record(tmp_path):
    root = tmp_path / "raw"
    _tar(root / "train" / "s.tar", [("a.png", _image(1)), ("a.txt", b"one"), ("b.png", _image(2)),
                                    ("b.txt", b"two"), ("c.png", _image(3)), ("c.txt", b"three")])
    with tarfile.open(root / "train" / "s.tar") as tar:
        cut = tar.getmember("c.png").offset_data + 50
    data = (root / "train" / "s.tar").read_bytes()
    (root / "train" / "s.tar").write_bytes(data[:cut])  # inside c.png

    source = open_source(root)  # nothing at the top: found in the recursive listing
    assert isinstance(source, WebDatasetSource)
    records = list(source.records())
    assert [(r.key, r.problem.reason if r.problem else None) for r in records] == [
        ("train/s.tar/a", None), ("train/s.tar/b", None), ("train/s.tar/#error", "malformed")]
    assert "cut short or corrupt after sample b" in records[-1].problem.message


@pytest.mark.parametrize("content", [b"this is not a tar archive at all" * 20, b""])
def test_file_that_is_not_a_tar_fails_before_reading(tmp_path, content):
    _tar(tmp_path / "a.tar", [("x.png", _image(1)), ("x.txt", b"fine")])
    (tmp_path / "b.tar").write_bytes(content)
    with pytest.raises(SourceError, match=r"b\.tar is not a tar archive .*expected \.tar shards"):
        open_source(tmp_path)
    assert len(list(open_source(tmp_path / "a.tar").records())) == 1  # `file` reads that shard alone
