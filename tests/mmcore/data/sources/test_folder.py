"""Folder source: images with sidecar .txt captions anywhere under the root."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.folder import FolderSource
from tests.mmcore.data.sources.sourcekit import CFG, read_rows


def _image(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (37 * i % 256, 255 - 29 * i % 256, 61 * i % 256)).save(path)




@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    _image(root / "a.png", 1)
    (root / "a.txt").write_text("a red square\n\n  一个红色方块  \r\n", encoding="utf-8")
    _image(root / "bad.png", 2)
    (root / "bad.txt").write_bytes("café".encode("latin-1"))
    _image(root / "empty.png", 3)
    (root / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (root / "orphan.txt").write_text("a caption without its image\n", encoding="utf-8")
    _image(root / "sub" / "B.PNG", 4)  # upper-case extension
    (root / "sub" / "B.txt").write_text("a green square\n", encoding="utf-8")
    _image(root / "sub" / "deeper" / "c.jpg", 5)  # no sidecar
    (root / "notes.md").write_text("not part of the dataset", encoding="utf-8")
    return root


def test_images_with_sidecars_and_every_problem(raw, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    source = open_source(raw)
    assert isinstance(source, FolderSource)
    assert source.annotation_files() == ["a.txt", "bad.txt", "empty.txt", "orphan.txt", "sub/B.txt"]
    records = list(source.records())
    assert [(r.number, r.key) for r in records] == [(1, "a.png"), (2, "bad.png"), (3, "empty.png"),
                                                    (4, "orphan.txt"), (5, "sub/B.PNG"), (6, "sub/deeper/c.jpg")]

    report = ingest(open_source(raw, "folder"), out, CFG, workers=1)
    assert report.records_in == 6 == report.accepted + report.rejected
    assert report.accepted == 2
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert [(c["lang"], c["text"]) for c in samples["a.png"]["captions"]] == [("en", "a red square"),
                                                                              ("zh", "一个红色方块")]
    assert [(c["lang"], c["text"]) for c in samples["sub/B.PNG"]["captions"]] == [("en", "a green square")]
    rejects = {r["sample_id"]: (r["reason"], r["image_path"]) for r in read_rows(out, "rejects")}
    assert rejects == {"bad.png": ("bad_encoding", None), "empty.png": ("no_text", "empty.png"),
                       "orphan.txt": ("missing_file", None), "sub/deeper/c.jpg": ("no_text", "sub/deeper/c.jpg")}

    again = ingest(open_source(raw), out, CFG, workers=1)  # keys and digests are stable
    assert (again.kept, again.processed, again.accepted) == (6, 0, 2)


def test_nested_folders_are_found_and_a_file_reads_one_sample(raw):
    nested = raw.parent / "nested"
    _image(nested / "x" / "y.png", 6)
    (nested / "x" / "y.txt").write_text("a blue square\n", encoding="utf-8")
    source = open_source(nested)  # nothing at the top: found in the recursive listing
    assert [r.annotation.captions for r in source.records()] == [{"en": ["a blue square"]}]

    one = open_source(raw / "a.txt", "folder")
    assert [(r.key, r.annotation.captions) for r in one.records()] == [("a.png", {"en": ["a red square"],
                                                                                  "zh": ["一个红色方块"]})]
    assert FolderSource.detect(one.storage, ["a.png", "b.txt"]) is False


def test_folder_without_images_fails_before_reading(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("a caption\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"only: no image files .* expected images with their captions"):
        open_source(tmp_path / "only", "folder")
