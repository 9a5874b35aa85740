"""Karpathy splits reader: detection by the file's shape, splits kept, cased captions, bad entries where they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.coco import CocoSource
from mmcore.data.sources.karpathy import KarpathySource
from mmcore.data.storage import Storage
from tests.mmcore.data.sources.sourcekit import CFG, read_rows, solid_png, write_json


def _entry(i: int, split: str, folder: str = "val2014", **extra) -> dict:
    name = f"COCO_{folder}_{i:012d}.jpg"
    return {"filepath": folder, "filename": name, "imgid": i, "cocoid": 100 + i, "split": split,
            "sentences": [{"raw": f"A man's red T-shirt, number {i}.", "tokens": ["a", "man's"]},
                          {"raw": f"Two dogs don't play with ball {i}.", "tokens": ["two", "dogs"]}], **extra}


@pytest.fixture()
def karpathy(tmp_path: Path) -> Path:
    """dataset_coco.json beside COCO's own folders: 5 good entries (one per split, restval twice), then a bad one
    (no filename), one with an unknown split, one without sentences and one whose picture is missing."""
    root = tmp_path / "coco"
    entries = [_entry(1, "train", "train2014"), _entry(2, "restval"), _entry(3, "val"), _entry(4, "test"),
               _entry(5, "restval"), {"filepath": "val2014", "split": "test", "sentences": []},
               _entry(7, "dev"), _entry(8, "train", "train2014", sentences=[]), _entry(9, "test")]
    for i, e in enumerate(entries[:5], 1):
        solid_png(root / e["filepath"] / e["filename"], (40 * i, 10, 200))
    write_json(root / "dataset_coco.json", {"images": entries, "dataset": "coco"})
    return root


def test_detected_by_its_shape_and_splits_kept(karpathy):
    source = open_source(karpathy)
    assert isinstance(source, KarpathySource) and source.annotation_files() == ["dataset_coco.json"]
    assert isinstance(open_source(karpathy / "dataset_coco.json"), KarpathySource)  # the file pointed at
    assert isinstance(open_source(karpathy, "karpathy"), KarpathySource)
    recs = list(source.records())
    assert [r.number for r in recs] == list(range(1, 10))
    assert [r.key for r in recs[:5]] == [f"dataset_coco/{100 + i}" for i in range(1, 6)]
    assert [r.split for r in recs[:5]] == ["train", "train", "val", "test", "train"]  # restval is training data
    assert recs[0].image == "train2014/COCO_train2014_000000000001.jpg"
    assert recs[0].where == "dataset_coco.json images[0]"
    assert recs[1].annotation.captions == {"en": ["A man's red T-shirt, number 2.", "Two dogs don't play with ball 2."]}
    assert [r.digest() for r in recs] == [r.digest() for r in open_source(karpathy).records()]  # stable


def test_bad_entries_are_rejected_where_they_are(karpathy, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    report = ingest(open_source(karpathy), out, CFG, workers=1)
    assert report.records_in == 9 == report.accepted + report.rejected
    assert (report.accepted, report.rejected) == (5, 4)
    rejects = {r["where"]: r for r in read_rows(out, "rejects")}
    assert {w: r["reason"] for w, r in rejects.items()} == {
        "dataset_coco.json images[5]": "malformed", "dataset_coco.json images[6]": "malformed",
        "dataset_coco.json images[7]": "no_text", "dataset_coco.json images[8]": "missing_file"}
    assert "must be an object with a string 'filename'" in rejects["dataset_coco.json images[5]"]["message"]
    message = rejects["dataset_coco.json images[6]"]["message"]
    assert 'split "dev"; expected one of train, restval, val, test' in message
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert samples["dataset_coco/103"]["split"] == "val" and samples["dataset_coco/104"]["split"] == "test"
    assert [c["text"] for c in samples["dataset_coco/101"]["captions"]] == [
        "A man's red T-shirt, number 1.", "Two dogs don't play with ball 1."]  # cased, as written


def test_flickr_style_names_tokens_only_sentences_and_images_folder(tmp_path):
    root = tmp_path / "flickr"
    solid_png(root / "images" / "1000.jpg", (9, 99, 199))
    write_json(root / "dataset_flickr8k.json", {"dataset": "flickr8k", "images": [
        {"filename": "1000.jpg", "imgid": 0, "split": "train", "sentences": [{"tokens": ["a", "dog", "runs"]}]},
        {"filename": "1001.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": 5}]}]})
    first, second = open_source(root).records()
    assert (first.key, first.image, first.annotation.captions) == ("dataset_flickr8k/0", "images/1000.jpg",
                                                                    {"en": ["a dog runs"]})
    assert second.problem.reason == "malformed" and "images[1] sentences[0]" in second.problem.message


def test_coco_files_are_not_karpathy_and_karpathy_is_not_coco(tmp_path):
    write_json(tmp_path / "captions_val2017.json", {"images": [{"id": 1, "file_name": "a.jpg"}],
                                                    "annotations": [{"image_id": 1, "caption": "x"}]})
    assert not KarpathySource.detect(Storage(tmp_path), ["captions_val2017.json"])
    other = tmp_path / "k"
    write_json(other / "splits.json", {"images": [_entry(1, "val")]})
    assert KarpathySource.detect(Storage(other), ["splits.json"])
    assert not CocoSource.detect(Storage(other), ["splits.json"])


@pytest.mark.parametrize("text, expected", [
    ('{"images": [\n  {"filename": 1,, }]}', r"dataset_coco\.json is not JSON: .* line 2 column"),
    ('{"images": {}}', r"dataset_coco\.json: expected a JSON object with an 'images' list .* got 'images' dict"),
    ('[{"images": []}]', r"dataset_coco\.json: expected a JSON object .* got list"),
])
def test_a_file_that_is_not_karpathy_fails_before_any_record(tmp_path, text, expected):
    (tmp_path / "dataset_coco.json").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        KarpathySource(Storage(tmp_path))
