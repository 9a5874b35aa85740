"""The ingest stage: counts that add up, the tokenizer kept when nothing changed, clear source errors."""

from __future__ import annotations

import json

import pytest

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data.dataset import load_samples, read_manifest
from mmcore.data.ingest import SPLITS
from mmcore.data.records import ANNOTATIONS
from mmcore.io import file_sha256
from mmcore.stages import ingest
from mmcore.stages.hooks import Hooks
from tests.mmcore.stages.stagekit import copy_run


def test_the_result_counts_every_record_and_matches_the_manifest(smoke_stages):
    _, cat, run = smoke_stages
    r, manifest = run.ingest, read_manifest(cat.processed)
    assert (r.records_in, r.accepted, r.rejected) == (60, 60, 0) and r.processed_now == 60 and r.kept == 0
    assert r.digest == manifest["digest"] and r.splits == manifest["splits"] and sum(r.splits.values()) == 60
    assert r.outputs == [cat.processed.manifest] and not r.tokenizer_kept
    assert r.source["format"] == "jsonl" and r.source_digest


def test_a_rerun_with_nothing_changed_keeps_everything(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    tokenizer = file_sha256(cat.processed.tokenizer)
    again = ingest.run(cfg, cat, workers=1)
    assert again.tokenizer_kept and (again.processed_now, again.kept) == (0, 60)
    assert again.digest == smoke_stages[2].ingest.digest and file_sha256(cat.processed.tokenizer) == tokenizer
    # the manifest describes the dataset, not the run that wrote it: a rerun that processed nothing writes
    # what the run that processed everything wrote (but for the source's location, another folder here)
    mine, first = (json.loads(c.processed.manifest.read_text()) for c in (cat, smoke_stages[1]))
    assert mine.pop("source")["uri"] != first.pop("source")["uri"] and mine == first


def test_an_edited_record_is_processed_again_and_the_tokenizer_refitted(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    lines = (cat.raw / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[5])
    record["captions"]["en"] = ["an entirely new caption"]
    lines[5] = json.dumps(record, ensure_ascii=False)
    bad = '{"id": "gone", "image": "images/missing.png", "captions": {"en": ["a red circle"]}}'
    (cat.raw / ANNOTATIONS).write_text("\n".join([*lines, bad]) + "\n", encoding="utf-8")
    again = ingest.run(cfg, cat, workers=1)
    assert (again.records_in, again.accepted, again.rejected) == (61, 60, 1)
    assert again.processed_now == 2 and again.kept == 59 and again.dropped == 1
    assert not again.tokenizer_kept and again.rejects_by_reason == {"missing_file": 1}
    assert ingest.rejects(cat).column("sample_id").to_pylist() == ["gone"]


def test_a_missing_source_says_how_to_get_one(tmp_path):
    cfg = load_config("smoke", {"data_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/raw/smoke does not exist: .*mm data synth"):
        ingest.check_source(cfg, Catalog.from_config(cfg))


def test_check_source_names_the_format_and_annotation_files(smoke_stages):
    cfg, cat, _ = smoke_stages
    info = ingest.check_source(cfg, cat)
    assert (info.format, info.annotation_files, info.uri) == ("jsonl", (ANNOTATIONS,), str(cat.raw))


def test_a_plan_with_changes_unmarks_the_dataset_until_finish(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    with ingest.lock(cat):
        unchanged = ingest.plan(cfg, cat)
        assert not unchanged.changes and cat.processed.manifest.exists()
        (cat.raw / ANNOTATIONS).write_text("\n".join((cat.raw / ANNOTATIONS).read_text().splitlines()[:-1]) + "\n")
        changed = ingest.plan(cfg, cat)
        assert changed.changes and not cat.processed.manifest.exists()
        result = ingest.finish(cfg, cat, changed.path, [])
    assert (result.records_in, result.dropped) == (59, 1) and cat.processed.manifest.exists()


class _Lines(Hooks):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_a_truncated_sample_shard_is_rebuilt_with_a_warning_in_the_run_log(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    damaged = cat.processed.samples(0)
    damaged.write_bytes(damaged.read_bytes()[:1000])  # a copy killed part way
    hooks = _Lines()
    again = ingest.run(cfg, cat, workers=1, hooks=hooks)
    assert (again.records_in, again.accepted, again.rejected, again.processed_now) == (60, 60, 0, 40)
    assert hooks.lines[0].startswith(f"warning: {damaged} cannot be read as Parquet (")
    assert hooks.lines[0].endswith("dropped with the rest of shard 00000, whose records are ingested again")
    assert again.repaired == (hooks.lines[0].removeprefix("warning: "),)
    assert [e["samples"] for e in read_manifest(cat.processed)["shards"]] == ["samples-00001.parquet",
                                                                              "samples-00002.parquet"]
    assert sorted(load_samples(cat.processed, SPLITS, with_images=False).sample_ids) == sorted(
        load_samples(smoke_stages[1].processed, SPLITS, with_images=False).sample_ids)


def test_a_token_shard_whose_bytes_changed_is_tokenized_again_to_the_same_bytes(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    tokens = cat.processed.tokens(1)
    good = tokens.read_bytes()
    tokens.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])  # the footer still reads
    hooks = _Lines()
    again = ingest.run(cfg, cat, workers=1, hooks=hooks)
    assert hooks.lines[0] == (f"warning: {tokens} does not have the bytes the manifest recorded for it (sha256 "
                              f"{file_sha256(smoke_stages[1].processed.tokens(1))[:12]}...): dropped, the shard is "
                              f"tokenized again")
    assert tokens.read_bytes() == good and again.digest == smoke_stages[2].ingest.digest
    assert again.processed_now == 0 and again.kept == 60
