"""A damaged shard left in the output folder (a full disk, a killed copy, a flipped bit) is dropped with a warning
naming it, and the next ingest rebuilds it: its records are ingested again, a token shard is tokenized again."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import build_manifest, fit_tokenizer, ingest, tokenize_shard
from mmcore.data.ingest.ledger import Ledger
from mmcore.data.sources import open_source
from tests.mmcore.data.ingest.ingestkit import rows, write_numbered

CFG = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)


@pytest.fixture()
def done(tmp_path: Path) -> tuple[Path, ProcessedDir]:
    """25 records (img7 without its file) ingested into 3 shards, tokenized, with a manifest: a complete dataset."""
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25), missing=(7,))
    report = ingest(open_source(root), out, CFG)
    fit_tokenizer([s.samples_path for s in report.shards], CFG.vocab_size, out.tokenizer)
    for shard in report.shards:
        tokenize_shard(out, shard.index, 8)
    build_manifest(out, report, {})
    return root, out


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path, at: int = 200) -> None:
    """One byte changed in the data pages: the footer still reads, the digest does not match."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _again(root: Path, out: ProcessedDir, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="mmcore.data.ingest.ledger"):
        report = ingest(open_source(root), out, CFG)
    assert report.records_in == 25 == report.accepted + report.rejected
    live = sorted(r["sample_id"] for r in rows(report, "samples") + rows(report, "rejects"))
    assert live == sorted(f"img{i}" for i in range(25))  # every record exactly once
    return report, [r.getMessage() for r in caplog.records]


def test_a_truncated_sample_shard_is_dropped_and_its_records_ingested_again(done, caplog):
    root, out = done
    _cut(out.samples(1))
    report, warnings = _again(root, out, caplog)
    assert report.processed == 10 and report.kept == 15
    assert [(s.index, s.new) for s in report.shards] == [(0, False), (2, False), (3, True)]
    assert len(warnings) == 1 and warnings == report.repairs
    assert warnings[0].startswith(f"{out.samples(1)} cannot be read as Parquet (ArrowInvalid: ")
    assert warnings[0].endswith(": dropped with the rest of shard 00001, whose records are ingested again")
    assert not out.samples(1).exists() and not out.rejects(1).exists() and not out.tokens(1).exists()
    assert not out.manifest.exists()  # incomplete until a finish writes it again


def test_a_sample_shard_whose_bytes_differ_from_the_manifest_is_dropped(done, caplog):
    root, out = done
    _flip(out.samples(0))
    pq.read_metadata(out.samples(0))  # still a readable Parquet file
    report, warnings = _again(root, out, caplog)
    assert report.processed == 10 and [s.index for s in report.shards] == [1, 2, 3]
    assert warnings == [f"{out.samples(0)} does not have the bytes the manifest recorded for it (sha256 "
                        f"{warnings[0].split('sha256 ')[1][:12]}...): dropped with the rest of shard 00000, whose "
                        f"records are ingested again"]


def test_a_damaged_reject_shard_takes_its_sample_shard_with_it(done, caplog):
    root, out = done
    out.rejects(0).write_bytes(b"")  # img7, the one rejected record, lives there
    report, warnings = _again(root, out, caplog)
    assert report.processed == 10 and [r["sample_id"] for r in rows(report, "rejects")] == ["img7"]
    assert warnings[0].startswith(f"{out.rejects(0)} cannot be read as Parquet")


def test_a_damaged_token_shard_is_dropped_to_be_tokenized_again(done, caplog):
    root, out = done
    before = out.samples(2).read_bytes()
    _cut(out.tokens(2))
    report, warnings = _again(root, out, caplog)
    assert report.processed == 0 and report.kept == 25 and out.samples(2).read_bytes() == before
    assert warnings == [f"{out.tokens(2)} cannot be read as Parquet (ArrowInvalid: Parquet magic bytes not found in "
                        f"footer. Either the file is corrupted or this is not a parquet file.): dropped, the shard is "
                        f"tokenized again"]
    assert not out.tokens(2).exists() and out.tokens(1).exists()
    tokenize_shard(out, 2, 8)  # what the stage's finish does next
    assert pq.read_table(out.tokens(2)).num_rows == 5


def test_an_intact_dataset_has_nothing_to_repair_with_or_without_its_manifest(done, caplog):
    root, out = done
    before = {p.name: p.read_bytes() for p in out.path.iterdir()}
    assert Ledger.read(out).repairs == []
    out.manifest.unlink()
    report, warnings = _again(root, out, caplog)
    assert warnings == [] and report.repairs == [] and report.processed == 0
    assert {p.name: p.read_bytes() for p in out.path.iterdir()} == {k: v for k, v in before.items()
                                                                      if k != out.manifest.name}
