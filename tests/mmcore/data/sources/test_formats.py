"""The reader registry: every format is importable, named in the config, and detection fails clearly."""

from __future__ import annotations

from typing import get_args

import pytest

from mmcore.config import IngestConfig, SourceFormat
from mmcore.data.sources import FORMATS, READERS, SourceError, open_source, reader


def test_every_registered_format_has_a_reader_and_a_config_value():
    assert FORMATS == get_args(SourceFormat)
    for name in READERS:
        cls = reader(name)
        assert cls.format == name and cls.description


def test_an_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid formats: auto, jsonl"):
        open_source(tmp_path, "xml")
    with pytest.raises(ValueError):
        IngestConfig(format="xml")


def test_an_unrecognised_folder_lists_what_was_expected(tmp_path):
    (tmp_path / "notes.md").write_text("not a dataset")
    with pytest.raises(SourceError, match=r"cannot tell the format of .*coco: .*--format"):
        open_source(tmp_path)


def test_a_missing_location_is_named(tmp_path):
    with pytest.raises(SourceError, match="nowhere"):
        open_source(tmp_path / "nowhere")


def test_a_jsonl_file_that_is_not_json_lines_fails_before_any_work(tmp_path):
    (tmp_path / "annotations.jsonl").write_text('[{"image": "a.png"},\n {"image": "b.png"}]\n')
    with pytest.raises(SourceError, match=r"annotations.jsonl line 1 is not JSON.*expected one JSON object per line"):
        open_source(tmp_path)


def test_an_unrecognised_folder_names_its_broken_json(tmp_path):
    (tmp_path / "captions_train2017.json").write_text('{"images": [],\n "annotations": [1,]}')
    with pytest.raises(SourceError, match=r"captions_train2017.json is not valid JSON \(.* at line 2 column"):
        open_source(tmp_path)


def test_source_lineage_hashes_small_annotation_files_and_lists_large_ones(tmp_path, monkeypatch):
    from mmcore.data.sources import base

    (tmp_path / "annotations.jsonl").write_text('{"image": "a.png", "captions": {"en": ["x"]}}\n')
    files = open_source(tmp_path).describe()["files"]
    assert list(files) == ["annotations.jsonl"] and files["annotations.jsonl"].startswith("sha256:")
    monkeypatch.setattr(base, "HASH_MAX_BYTES", 10)  # as if the annotations were the whole dataset
    fingerprint = open_source(tmp_path).describe()["files"]["annotations.jsonl"]
    assert fingerprint.startswith("size:46:mtime:")
