"""Earlier runs are a ledger: a killed ingest resumes byte-identically, a grown source is ingested
incrementally, edited and removed records replace their old rows, and --retry-rejected retries only
rejected records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.ingest.decode import key64
from mmcore.data.ingest.ledger import Ledger, rewrite_shard
from mmcore.data.records import ANNOTATIONS
from mmcore.data.shards import TOKENS, read_metadata, write_table
from mmcore.data.sources import open_source
from tests.mmcore.data.ingest.ingestkit import (
    EVERY_KIND_ACCEPTED,
    EVERY_KIND_CFG,
    EVERY_KIND_RECORDS,
    files,
    rows,
    write_every_kind,
    write_numbered,
)

CFG = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)
REPO = Path(__file__).resolve().parents[4]


def _live(report) -> tuple[list[dict], list[dict]]:
    return rows(report, "samples"), rows(report, "rejects")


# --- the ledger and rewriting one shard -----------------------------------------------------------------


def test_the_ledger_holds_every_record_of_the_complete_shards_and_removes_leftovers(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25), missing=(7,))
    ingest(open_source(root), out, CFG)
    out.samples(2).unlink()  # shard 2 unfinished: its rejects are a leftover
    write_table(out.tokens(1), pa.Table.from_pylist([], schema=TOKENS))  # tokens of a complete shard stay
    (out.path / ".samples-00003.parquet.x1.tmp").write_bytes(b"half a file")
    ledger = Ledger.read(out)
    assert ledger.shards == [0, 1]
    assert sorted(p.name for p in out.path.iterdir()) == [
        "rejects-00000.parquet", "rejects-00001.parquet", "samples-00000.parquet", "samples-00001.parquet",
        "tokens-00001.parquet"]
    assert len(ledger.records) == 20
    assert {k: (shard, rejected) for k, (_, shard, rejected) in ledger.records.items()} == {
        key64(f"img{i}"): (i // 10, i == 7) for i in range(20)}
    assert sorted(ledger.images.values()) == sorted(f"img{i}" for i in range(20) if i != 7)
    assert (ledger.drop, ledger.redo) == ({}, set())


def test_rewrite_drops_rows_and_moves_duplicates_to_the_rejects_in_source_order(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(10), missing=(5,))
    ingest(open_source(root), out, CFG)
    drop = {key64("img1")}
    dupes = {key64("img9"): ("img0", f"{ANNOTATIONS} line 10"), key64("img3"): ("img2", f"{ANNOTATIONS} line 4")}
    assert rewrite_shard(out, 0, drop, dupes) == (6, 3, 1)  # (accepted, rejected, dropped)
    samples, rejects = pq.read_table(out.samples(0)).to_pylist(), pq.read_table(out.rejects(0)).to_pylist()
    assert [r["sample_id"] for r in samples] == ["img0", "img2", "img4", "img6", "img7", "img8"]
    assert [(r["record"], r["sample_id"], r["reason"], r["duplicate_of"], r["where"]) for r in rejects] == [
        (4, "img3", "duplicate", "img2", f"{ANNOTATIONS} line 4"),
        (6, "img5", "missing_file", None, f"{ANNOTATIONS} line 6"),
        (10, "img9", "duplicate", "img0", f"{ANNOTATIONS} line 10")]
    assert rejects[0]["message"] == "same image bytes as sample 'img2', which was kept"
    meta = read_metadata(out.samples(0))
    assert (meta["index"], meta["records"], meta["accepted"], meta["rejected"]) == (0, 9, 6, 3)
    before = files(out)
    assert rewrite_shard(out, 0, set(), {}) == (6, 3, 0)  # nothing to do: files untouched
    assert files(out) == before


def test_a_shard_rewritten_to_nothing_is_removed_with_its_token_shard(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(3))
    ingest(open_source(root), out, CFG)
    out.tokens(0).write_bytes(b"tokens")
    assert rewrite_shard(out, 0, {key64(f"img{i}") for i in range(3)}, {}) == (0, 0, 3)
    assert list(out.path.iterdir()) == []


# --- reruns ---------------------------------------------------------------------------------------------


@pytest.fixture()
def every_kind(tmp_path: Path) -> Path:
    return write_every_kind(tmp_path)[0]


def test_rerun_with_nothing_new_keeps_every_shard(every_kind, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    before = files(out)
    again = ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    assert again.processed == 0 and again.kept == EVERY_KIND_RECORDS and not any(s.new for s in again.shards)
    assert again.accepted == EVERY_KIND_ACCEPTED and again.records_in == EVERY_KIND_RECORDS
    assert files(out) == before


def test_an_unfinished_shard_is_redone_and_leftovers_are_removed(every_kind, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    first = ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    before = files(out)
    last = first.shards[-1]
    out.samples(last.index).unlink()  # killed after writing the rejects, before the samples
    (out.path / f".samples-{last.index + 1:05d}.parquet.x1.tmp").write_bytes(b"half a file")
    again = ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    assert [s.new for s in again.shards] == [False] * (len(again.shards) - 1) + [True]
    assert again.processed == last.accepted + last.rejected == 6
    assert files(out) == before


def test_a_lost_middle_shard_is_reingested_into_a_new_one(every_kind, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    first = ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    lost = first.shards[1]
    out.samples(lost.index).unlink()
    again = ingest(open_source(every_kind), out, EVERY_KIND_CFG)
    assert again.processed == lost.accepted + lost.rejected == 7 and again.kept == EVERY_KIND_RECORDS - 7
    assert [s.index for s in again.shards if s.new] == [first.shards[-1].index + 1] == [5]
    assert again.accepted == first.accepted and again.rejected == first.rejected
    ids = [r["record_key"] for r in rows(again, "samples") + rows(again, "rejects")]
    assert len(ids) == len(set(ids)) == EVERY_KIND_RECORDS


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import mmcore.data.ingest.decode as decode
    from mmcore.catalog import ProcessedDir
    from mmcore.config import IngestConfig
    from mmcore.data.ingest import ingest
    from mmcore.data.sources import open_source

    slow = decode.process_record
    def process_record(*args):  # slowed down so the kill lands mid-run
        time.sleep(0.01)
        return slow(*args)
    decode.process_record = process_record
    cfg = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)
    ingest(open_source(sys.argv[1]), ProcessedDir(Path(sys.argv[2])), cfg, workers=1)
""")


def test_a_killed_ingest_resumes_to_byte_identical_shards(tmp_path):
    root, whole_out = tmp_path / "raw", ProcessedDir(tmp_path / "whole")
    write_numbered(root, range(300))
    whole = ingest(open_source(root), whole_out, CFG)
    assert whole.accepted == 300 and len(whole.shards) == 30

    out = ProcessedDir(tmp_path / "killed")
    script = tmp_path / "run_ingest.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(out)], env=env)
    deadline = time.monotonic() + 60
    while len(out.shard_files("samples")) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = len(out.shard_files("samples"))
    assert 5 <= done < 30, f"the kill should land mid-run, {done} of 30 shards were complete"

    resumed = ingest(open_source(root), out, CFG)
    assert resumed.kept == done * 10 and resumed.processed == 300 - done * 10
    assert files(out) == files(whole_out)  # same names, same bytes, no leftovers: nothing lost or duplicated


def test_new_records_go_to_new_shards_and_old_shards_are_untouched(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25))
    first = ingest(open_source(root), out, CFG)
    before = files(out)
    splits = {r["sample_id"]: r["split"] for r in _live(first)[0]}

    write_numbered(root, range(40))  # 15 new records appended
    second = ingest(open_source(root), out, CFG)
    assert second.records_in == 40 and second.kept == 25 and second.processed == 15
    assert [s.index for s in second.shards if s.new] == [3, 4]
    assert all(files(out)[name] == data for name, data in before.items())  # old shards byte-identical
    samples, _ = _live(second)
    assert sorted(r["sample_id"] for r in samples) == sorted(f"img{i}" for i in range(40))
    assert {r["sample_id"]: r["split"] for r in samples if r["sample_id"] in splits} == splits


def test_an_edited_record_replaces_its_old_row(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25))
    ingest(open_source(root), out, CFG)
    text = (root / ANNOTATIONS).read_text(encoding="utf-8").replace('"image 3"', '"image three"')
    (root / ANNOTATIONS).write_text(text, encoding="utf-8")
    report = ingest(open_source(root), out, CFG)
    assert report.processed == 1 and report.dropped == 1 and report.kept == 24
    samples, rejects = _live(report)
    assert len(samples) == 25 and not rejects  # not a duplicate of its own old version
    assert [r["captions"][0]["text"] for r in samples if r["sample_id"] == "img3"] == ["image three"]
    assert pq.read_metadata(report.shards[0].samples_path).num_rows == 9  # dropped from shard 0


def test_a_removed_record_is_dropped(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25))
    ingest(open_source(root), out, CFG)
    lines = (root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    (root / ANNOTATIONS).write_text("\n".join(lines[:5] + lines[6:]) + "\n", encoding="utf-8")
    report = ingest(open_source(root), out, CFG)
    assert report.records_in == 24 == report.accepted + report.rejected and report.dropped == 1
    assert "img5" not in {r["sample_id"] for r in _live(report)[0]}


def test_a_shard_whose_records_all_left_is_removed_with_itsfiles(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25))
    first = ingest(open_source(root), out, CFG)
    assert [s.index for s in first.shards] == [0, 1, 2]
    out.tokens(2).write_bytes(b"tokens of the last shard")
    lines = (root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    (root / ANNOTATIONS).write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")  # shard 2 held 20-24
    report = ingest(open_source(root), out, CFG)
    assert [s.index for s in report.shards] == [0, 1] and report.dropped == 5
    assert sorted(out.path.iterdir()) == sorted(path for i in (0, 1) for path in (out.samples(i), out.rejects(i)))
    out.tokens(3).write_bytes(b"left by a run killed while removing shard 3")
    again = ingest(open_source(root), out, CFG)
    assert again.processed == 0 and not out.tokens(3).exists()


def test_retry_rejected_retries_only_the_rejected_records(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(12), missing=(4, 9))
    first = ingest(open_source(root), out, CFG)
    assert first.rejected == 2
    write_numbered(root, range(12))  # the missing files arrive
    plain = ingest(open_source(root), out, CFG)
    assert plain.processed == 0 and plain.rejected == 2  # unchanged records are not retried by default
    retried = ingest(open_source(root), out, CFG, retry_rejected=True)
    assert retried.processed == 2 and retried.kept == 10 and retried.dropped == 2
    samples, rejects = _live(retried)
    assert not rejects and len(samples) == 12
    assert sorted(r["sample_id"] for r in samples if r["record"] in (5, 10)) == ["img4", "img9"]


def test_a_new_record_with_an_ingested_image_is_a_duplicate_of_it(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(10))
    ingest(open_source(root), out, CFG)
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "again", "image": "images/2.png", "captions": {"en": ["seen before"]}}) + "\n")
    report = ingest(open_source(root), out, CFG)
    _, rejects = _live(report)
    assert [(r["sample_id"], r["reason"], r["duplicate_of"]) for r in rejects] == [("again", "duplicate", "img2")]
