"""Reruns: a killed ingest resumes byte-identically, a grown source is ingested incrementally, edited and
removed records replace their old rows, and --retry-rejected retries only rejected records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data.ingest import ingest
from mmcore.data.records import ANNOTATIONS
from mmcore.data.sources import open_source

CFG = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)
REPO = Path(__file__).resolve().parents[3]


def _write(root: Path, ids: range, side: int = 24, missing: tuple[int, ...] = ()) -> None:
    """Records img{i} with a distinct solid colour each; `missing` ones reference no file yet."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in ids:
        if i not in missing:
            Image.new("RGB", (side, side), (i % 256, i // 256, 7)).save(root / f"images/{i}.png")
        lines.append(json.dumps({"id": f"img{i}", "image": f"images/{i}.png", "captions": {"en": [f"image {i}"]}}))
    (root / ANNOTATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def _live(report) -> tuple[list[dict], list[dict]]:
    return (ds.read_tables([s.samples_path for s in report.shards]).to_pylist(),
            ds.read_tables([s.rejects_path for s in report.shards]).to_pylist())


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import mmcore.data.ingest as ing
    from mmcore.config import IngestConfig
    from mmcore.data.sources import open_source

    slow = ing.process_record
    def process_record(*args):  # slowed down so the kill lands mid-run
        time.sleep(0.01)
        return slow(*args)
    ing.process_record = process_record
    cfg = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)
    ing.ingest(open_source(sys.argv[1]), sys.argv[2], cfg, workers=1)
""")


def test_a_killed_ingest_resumes_to_byte_identical_shards(tmp_path):
    root = tmp_path / "raw"
    _write(root, range(300))
    whole = ingest(open_source(root), tmp_path / "whole", CFG)
    assert whole.accepted == 300 and len(whole.shards) == 30

    out = tmp_path / "killed"
    script = tmp_path / "run_ingest.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(out)], env=env)
    deadline = time.monotonic() + 60
    while len(list(out.glob("samples-*.parquet"))) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = len(list(out.glob("samples-*.parquet")))
    assert 5 <= done < 30, f"the kill should land mid-run, {done} of 30 shards were complete"

    resumed = ingest(open_source(root), out, CFG)
    assert resumed.kept == done * 10 and resumed.processed == 300 - done * 10
    assert _files(out) == _files(tmp_path / "whole")  # same names, same bytes: nothing lost or duplicated
    assert not list(out.glob(".*tmp"))


def test_new_records_go_to_new_shards_and_old_shards_are_untouched(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(25))
    first = ingest(open_source(root), out, CFG)
    before = _files(out)
    splits = {r["sample_id"]: r["split"] for r in _live(first)[0]}

    _write(root, range(40))  # 15 new records appended
    second = ingest(open_source(root), out, CFG)
    assert second.records_in == 40 and second.kept == 25 and second.processed == 15
    assert [s.index for s in second.shards if s.new] == [3, 4]
    assert all(_files(out)[name] == data for name, data in before.items())  # old shards byte-identical
    samples, _ = _live(second)
    assert sorted(r["sample_id"] for r in samples) == sorted(f"img{i}" for i in range(40))
    assert {r["sample_id"]: r["split"] for r in samples if r["sample_id"] in splits} == splits


def test_an_edited_record_replaces_its_old_row(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(25))
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
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(25))
    ingest(open_source(root), out, CFG)
    lines = (root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    (root / ANNOTATIONS).write_text("\n".join(lines[:5] + lines[6:]) + "\n", encoding="utf-8")
    report = ingest(open_source(root), out, CFG)
    assert report.records_in == 24 == report.accepted + report.rejected and report.dropped == 1
    assert "img5" not in {r["sample_id"] for r in _live(report)[0]}


def test_a_shard_whose_records_all_left_is_removed_with_its_files(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(25))
    first = ingest(open_source(root), out, CFG)
    (out / "tokens-00002.parquet").write_bytes(b"tokens of the last shard")
    lines = (root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    (root / ANNOTATIONS).write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")  # shard 2 held 20-24
    report = ingest(open_source(root), out, CFG)
    assert [s.index for s in report.shards] == [0, 1] and report.dropped == 5
    assert sorted(p.name for p in out.iterdir()) == sorted(
        name for s in first.shards[:2] for name in (Path(s.samples_path).name, Path(s.rejects_path).name))
    (out / "tokens-00003.parquet").write_bytes(b"left by a run killed while removing shard 3")
    again = ingest(open_source(root), out, CFG)
    assert again.processed == 0 and not (out / "tokens-00003.parquet").exists()


def test_retry_rejected_retries_only_the_rejected_records(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(12), missing=(4, 9))
    first = ingest(open_source(root), out, CFG)
    assert first.rejected == 2
    _write(root, range(12))  # the missing files arrive
    plain = ingest(open_source(root), out, CFG)
    assert plain.processed == 0 and plain.rejected == 2  # unchanged records are not retried by default
    retried = ingest(open_source(root), out, CFG, retry_rejected=True)
    assert retried.processed == 2 and retried.kept == 10 and retried.dropped == 2
    samples, rejects = _live(retried)
    assert not rejects and len(samples) == 12
    assert sorted(r["sample_id"] for r in samples if r["record"] in (5, 10)) == ["img4", "img9"]


def test_a_new_record_with_an_ingested_image_is_a_duplicate_of_it(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    _write(root, range(10))
    ingest(open_source(root), out, CFG)
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "again", "image": "images/2.png", "captions": {"en": ["seen before"]}}) + "\n")
    report = ingest(open_source(root), out, CFG)
    _, rejects = _live(report)
    assert [(r["sample_id"], r["reason"], r["duplicate_of"]) for r in rejects] == [("again", "duplicate", "img2")]
