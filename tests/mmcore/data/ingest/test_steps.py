"""Ingest on a small canonical dataset with one bad record of every kind: every record accepted or rejected
with its reason, the shard task and finish steps as an orchestrator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import assign_split, finish_ingest, ingest, ingest_shard, plan_ingest
from mmcore.data.records import ANNOTATIONS, REASONS
from mmcore.data.shards import decode_png, read_metadata
from mmcore.data.sources import open_source
from tests.mmcore.data.ingest.ingestkit import (
    EVERY_KIND_ACCEPTED,
    EVERY_KIND_CFG,
    EVERY_KIND_RECORDS,
    NOT_IN_JSONL,
    files,
    rows,
    write_every_kind,
)

CFG = EVERY_KIND_CFG
RECORDS = EVERY_KIND_RECORDS


@pytest.fixture()
def raw(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return write_every_kind(tmp_path)


def _ingest(root: Path, out: ProcessedDir, **kw):
    return ingest(open_source(root), out, CFG, **kw)


def test_every_record_is_accepted_or_rejected_with_its_reason(raw, tmp_path):
    root, reasons = raw
    report = _ingest(root, ProcessedDir(tmp_path / "out"))
    assert report.records_in == RECORDS and report.processed == RECORDS
    samples, rejects = rows(report, "samples"), rows(report, "rejects")
    assert len(samples) + len(rejects) == RECORDS == report.accepted + report.rejected
    assert report.accepted == EVERY_KIND_ACCEPTED
    assert sorted(s["sample_id"] for s in samples) == sorted([f"g{i}" for i in range(12)] + ["palette"])
    by_id = {r["sample_id"]: r for r in rejects}
    assert {k: by_id[k]["reason"] for k in reasons} == reasons
    assert by_id["b_same_bytes"]["duplicate_of"] == "g3"
    assert by_id["b_same_bytes"]["message"] == "same image bytes as sample 'g3', which was kept"
    assert "decompression bomb" in by_id["b_bomb"]["message"]
    repeated = next(r for r in rejects if r["record_key"] == "g5#2")
    assert repeated["reason"] == "duplicate" and repeated["message"] == "key 'g5' repeats record 6 of the source"
    not_json = next(r for r in rejects if "not JSON" in r["message"])
    assert not_json["reason"] == "malformed" and not_json["where"] == f"{ANNOTATIONS} line 26"
    assert by_id[f"{ANNOTATIONS}:30"]["reason"] == "bad_encoding"  # blank line 27 is not a record
    assert {r["reason"] for r in rejects} == set(REASONS) - set(NOT_IN_JSONL)  # every other reason code is here
    assert by_id["b_missing"]["where"] == f"{ANNOTATIONS} line 13"
    assert sorted(r["record"] for r in samples + rejects) == list(range(1, RECORDS + 1))


def test_images_are_resized_rgb_and_split_by_content(raw, tmp_path):
    root, _ = raw
    samples = rows(_ingest(root, ProcessedDir(tmp_path / "out")), "samples")
    for row in samples:
        assert decode_png(row["image"]).shape == (3, 32, 32)
        assert row["split"] == assign_split(row["image_sha256"], CFG.split)
    g0 = next(r for r in samples if r["sample_id"] == "g0")
    assert (g0["width"], g0["height"], g0["image_path"]) == (40, 40, "images/g0.png")
    assert g0["captions"] == [{"lang": "en", "text": "a red circle number 0"}, {"lang": "zh", "text": "一个红色圆形"}]
    assert g0["qa"] == [{"question": "what color is the circle?", "answer": "red", "type": "color",  # normalised
                         "answers": [], "answer_type": None, "question_type": None, "question_id": None}]


def test_shard_results_and_metadata_name_the_processed_folder(raw, tmp_path):
    root, _ = raw
    out = ProcessedDir(tmp_path / "out")
    report = _ingest(root, out)
    assert [s.index for s in report.shards] == [0, 1, 2, 3, 4]  # 34 records, 7 per shard
    assert [(s.samples_path, s.rejects_path) for s in report.shards] == [
        (str(out.samples(i)), str(out.rejects(i))) for i in range(5)]
    assert [s.accepted + s.rejected for s in report.shards] == [7, 7, 7, 7, 6]
    meta = read_metadata(out.samples(0))
    assert (meta["index"], meta["records"], meta["accepted"]) == (0, 7, 7)
    assert meta["ingest"] == CFG.model_dump(mode="json")
    assert all(s.new and s.writer for s in report.shards)
    assert not out.staging.exists()  # the run's scratch folder is gone


def test_workers_give_the_same_bytes_as_one_process(raw, tmp_path):
    root, _ = raw
    one, two = ProcessedDir(tmp_path / "one"), ProcessedDir(tmp_path / "two")
    _ingest(root, one, workers=1)
    _ingest(root, two, workers=2)
    assert len(files(one)) == 10 and files(one) == files(two)


def test_shard_tasks_in_any_order_give_the_bytes_of_one_run(raw, tmp_path):
    """As an orchestrator runs it: plan, one task per shard (here last first), finish."""
    root, _ = raw
    whole, steps = ProcessedDir(tmp_path / "whole"), ProcessedDir(tmp_path / "steps")
    report = _ingest(root, whole)
    plan = plan_ingest(open_source(root), steps, CFG)
    assert [(w.index, w.records) for w in plan.work] == [(0, 7), (1, 7), (2, 7), (3, 7), (4, 6)]
    results = [ingest_shard(plan, work) for work in reversed(plan.work)]
    stepped = finish_ingest(plan, results)
    assert files(steps) == files(whole)
    assert [(s.index, s.accepted, s.rejected) for s in stepped.shards] == [
        (s.index, s.accepted, s.rejected) for s in report.shards]
    assert (stepped.accepted, stepped.rejected, stepped.processed) == (EVERY_KIND_ACCEPTED, RECORDS - 13, RECORDS)


def test_finish_with_a_missing_shard_is_an_error(raw, tmp_path):
    root, _ = raw
    out = ProcessedDir(tmp_path / "out")
    plan = plan_ingest(open_source(root), out, CFG)
    results = [ingest_shard(plan, work) for work in plan.work[:-1]]
    with pytest.raises(RuntimeError, match=r"shards \[0, 1, 2, 3\] were written, the plan has \[0, 1, 2, 3, 4\]"):
        finish_ingest(plan, results)


def test_synthetic_dataset_ingests_without_rejects(shapes_raw, tmp_path):
    cfg = CFG.model_copy(update={"shard_size": 50})
    report = ingest(open_source(shapes_raw), ProcessedDir(tmp_path / "out"), cfg)
    assert [s.accepted + s.rejected for s in report.shards] == [50, 50, 20]
    assert report.accepted == 120 and report.rejected == 0
