"""COCO captions reader: detection, image folders, captions per image, bad records and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import assign_split, ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.coco import CocoSource
from mmcore.data.storage import Storage
from tests.mmcore.data.sources.sourcekit import CFG, read_rows, solid_png, write_json


@pytest.fixture()
def coco(tmp_path: Path) -> Path:
    """annotations/ with a train file (images in train2017/), a val file (images in images/) and an instances
    file that is not captions; 6 images: 4 good, one without captions, one whose file is missing."""
    root = tmp_path / "coco"
    for i in (1, 2, 3):
        solid_png(root / "train2017" / f"{i:012d}.jpg", (40 * i, 10, 200))
    solid_png(root / "images" / "val_7.png", (5, 250, 5))
    solid_png(root / "images" / "val_8.png", (5, 5, 250))
    write_json(root / "annotations" / "captions_train2017.json", {
        "info": {}, "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 32} for i in (1, 2, 3, 4)],
        "annotations": [{"id": 10, "image_id": 1, "caption": "A red square."},
                        {"id": 11, "image_id": 2, "caption": "A purple square."},
                        {"id": 12, "image_id": 1, "caption": "一个红色方块"},
                        {"id": 13, "image_id": 1, "caption": "Another caption."},
                        {"id": 14, "image_id": 4, "caption": "An image that is not there."}]})
    write_json(root / "annotations" / "captions_val2017.json", {
        "images": [{"id": 7, "file_name": "val_7.png"}, {"id": 8, "file_name": "val_8.png"}],
        "annotations": [{"image_id": 8, "caption": "blue"}, {"image_id": 7, "caption": "green"}]})
    write_json(root / "annotations" / "instances_train2017.json", {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3}]})
    (root / "README.txt").write_text("COCO subset\n")
    return root


def test_detects_and_reads_captions_files_only(coco):
    source = open_source(coco)
    assert isinstance(source, CocoSource)
    assert source.annotation_files() == ["annotations/captions_train2017.json", "annotations/captions_val2017.json"]
    assert isinstance(open_source(coco, "coco"), CocoSource)
    recs = list(source.records())
    assert [r.number for r in recs] == [1, 2, 3, 4, 5, 6]
    assert [r.key for r in recs] == ["captions_train2017/1", "captions_train2017/2", "captions_train2017/3",
                                     "captions_train2017/4", "captions_val2017/7", "captions_val2017/8"]
    assert recs[0].where == "annotations/captions_train2017.json image 1"
    assert recs[0].annotation.captions == {"en": ["A red square.", "Another caption."], "zh": ["一个红色方块"]}
    assert recs[0].image == "train2017/000000000001.jpg"  # folder chosen from the file name
    assert recs[3].image == "train2017/000000000004.jpg"  # same folder for every image of that file
    assert recs[4].image == "images/val_7.png"
    assert recs[4].annotation.captions == {"en": ["green"]}
    assert recs[2].annotation is None and recs[2].problem.reason == "no_text"
    assert [r.split for r in recs] == ["train"] * 4 + ["val"] * 2
    assert [r.digest() for r in recs] == [r.digest() for r in open_source(coco).records()]  # stable


def test_ingest_accepts_good_and_rejects_bad_with_reasons(coco, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    report = ingest(open_source(coco), out, CFG, workers=1)
    assert report.records_in == 6 == report.accepted + report.rejected
    assert (report.accepted, report.rejected) == (4, 2)
    rejects = {r["sample_id"]: r for r in read_rows(out, "rejects")}
    assert {k: r["reason"] for k, r in rejects.items()} == {"captions_train2017/3": "no_text",
                                                            "captions_train2017/4": "missing_file"}
    assert "000000000004.jpg" in rejects["captions_train2017/4"]["message"]
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert sorted(samples) == ["captions_train2017/1", "captions_train2017/2", "captions_val2017/7",
                               "captions_val2017/8"]
    assert samples["captions_val2017/7"]["split"] == "val" == samples["captions_val2017/8"]["split"]
    given_train = ("captions_train2017/1", "captions_train2017/2")  # cut into train and val by image digest
    assert [samples[k]["split"] for k in given_train] == ["train", "train"]
    assert [assign_split(samples[k]["image_sha256"], CFG.split, "train") for k in given_train] == ["train", "train"]
    assert [(c["lang"], c["text"]) for c in samples["captions_train2017/1"]["captions"]] == [
        ("en", "A red square."), ("en", "Another caption."), ("zh", "一个红色方块")]
    assert samples["captions_train2017/1"]["qa"] == []


def test_top_level_file_pointed_at(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "flat"
    solid_png(root / "a.png", (1, 2, 3))
    solid_png(root / "sub" / "b.png", (200, 2, 3))
    ann = write_json(root / "my.json", {
        "images": [{"id": "a", "file_name": "a.png"}, {"id": "b", "file_name": "sub/b.png"}],
        "annotations": [{"image_id": "b", "caption": "b"}, {"image_id": "a", "caption": "a"}]})
    for source in (open_source(ann), open_source(root)):
        assert isinstance(source, CocoSource)
        recs = list(source.records())
        assert [(r.key, r.image, r.split) for r in recs] == [("my/a", "a.png", None), ("my/b", "sub/b.png", None)]
    report = ingest(open_source(ann, "coco"), out, CFG)
    assert (report.records_in, report.accepted, report.rejected) == (2, 2, 0)


def test_no_image_found_falls_back_to_images_folder(tmp_path):
    out = ProcessedDir(tmp_path / "out")
    root = tmp_path / "c"
    write_json(root / "captions_test.json", {"images": [{"id": 5, "file_name": "x.jpg"}],
                                         "annotations": [{"image_id": 5, "caption": "gone"}]})
    (rec,) = open_source(root).records()
    assert (rec.image, rec.split) == ("images/x.jpg", "test")
    report = ingest(open_source(root), out, CFG)
    assert (report.records_in, report.accepted, report.rejected) == (1, 0, 1)
    assert read_rows(out, "rejects")[0]["reason"] == "missing_file"


def test_not_coco_is_not_detected(tmp_path):
    root = tmp_path / "other"
    write_json(root / "data.json", {"images": [{"id": 1, "file_name": "a.png"}],
                                "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]}]})
    assert not CocoSource.detect(Storage(root), ["data.json"])
    with pytest.raises(SourceError, match="no COCO captions JSON"):
        CocoSource(Storage(root))


@pytest.mark.parametrize("text, expected", [
    ('{"images": [], "annotations": [\n  {"image_id": 1,, }]}', r"bad\.json is not JSON: .* line 2 column"),
    ('{"images": [{"id": 1, "file_name": "a.png"}]}', r"bad\.json: expected a top-level 'annotations' list"),
    ('{"images": {}, "annotations": []}', r"bad\.json: expected a top-level 'images' list \(got dict\)"),
    ('[{"images": []}]', r"bad\.json: expected a JSON object with 'images' and 'annotations', got list"),
    ('{"images": [], "annotations": [' + "[" * 100000 + "]}", r"bad\.json is not JSON this reader can take"),
])
def test_malformed_file_fails_before_any_record(tmp_path, text, expected):
    (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        open_source(tmp_path / "bad.json", "coco")


def test_bad_entries_and_orphan_annotations_are_bad_records_where_they_are(tmp_path):
    """Real exports hold captions of images they do not list: each such entry is a rejection, not a bad file."""
    root = tmp_path / "c"
    solid_png(root / "a.png", (200, 0, 0))
    write_json(root / "captions_train.json", {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2}, "not an object"],
        "annotations": [{"image_id": 1, "caption": "red"}, {"image_id": 9, "caption": "of no image"},
                        {"image_id": 1, "caption": 3}, {"caption": "no image id"}, {"image_id": 1, "caption": "a"}]})
    recs = list(open_source(root).records())
    assert [(r.number, r.key, r.where, r.problem and r.problem.reason) for r in recs] == [
        (1, "captions_train/1", "captions_train.json image 1", None),
        (2, "captions_train/images[1]", "captions_train.json images[1]", "malformed"),
        (3, "captions_train/images[2]", "captions_train.json images[2]", "malformed"),
        (4, "captions_train/annotations[1]", "captions_train.json annotations[1]", "orphan"),
        (5, "captions_train/annotations[2]", "captions_train.json annotations[2]", "malformed"),
        (6, "captions_train/annotations[3]", "captions_train.json annotations[3]", "malformed")]
    assert recs[0].annotation.captions == {"en": ["red", "a"]}  # its good captions, the bad one is a record
    assert recs[3].problem.message == ("captions_train.json annotations[1] has image_id 9, which is not the id of any "
                                       "entry in 'images'")
    assert "'file_name'" in recs[1].problem.message and all(r.split == "train" for r in recs)
    out = ProcessedDir(tmp_path / "out")
    report = ingest(open_source(root), out, CFG)
    assert (report.records_in, report.accepted, report.rejected) == (6, 1, 5)
    reasons = {r["where"]: r["reason"] for r in read_rows(out, "rejects")}
    assert reasons["captions_train.json annotations[1]"] == "orphan"


def test_broken_captions_file_in_folder_is_reported_not_skipped(coco):
    (coco / "annotations" / "captions_val2017.json").write_text('{"images": [', encoding="utf-8")
    with pytest.raises(SourceError, match=r"captions_val2017\.json is not JSON: .* line 1 column 13"):
        open_source(coco)


def test_large_files_are_detected_by_peeking(coco, monkeypatch):
    import mmcore.data.sources.coco as coco_mod

    real_peek = coco_mod.peek
    monkeypatch.setattr(coco_mod, "SMALL", 0)  # every file counts as large: only its head and tail are read
    monkeypatch.setattr(coco_mod, "peek", lambda storage, rel: real_peek(storage, rel, 80))
    head, tail, size = real_peek(Storage(coco), "annotations/captions_train2017.json", 80)
    assert len(head) == len(tail) == 80 and size > 400 and tail.endswith(b'there."}]}')
    assert open_source(coco).annotation_files() == ["annotations/captions_train2017.json",
                                                    "annotations/captions_val2017.json"]


def test_many_json_sidecars_are_not_opened_for_detection(tmp_path, monkeypatch):
    import mmcore.data.sources.coco as coco_mod

    for i in range(40):
        write_json(tmp_path / f"{i:03d}.json", {"images": [], "annotations": [{"image_id": 1, "caption": "x"}]})
    monkeypatch.setattr(coco_mod, "_looks_coco", lambda *a: pytest.fail("a sidecar was opened"))
    assert not CocoSource.detect(Storage(tmp_path), sorted(p.name for p in tmp_path.iterdir()))
