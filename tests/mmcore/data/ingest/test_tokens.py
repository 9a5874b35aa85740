"""The last step of an ingest: the tokenizer, token shards row-aligned with the sample shards, the manifest."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from mmcore.data import dataset as ds
from mmcore.data.ingest import tokens
from mmcore.data.shards import read_metadata
from mmcore.io import combined_digest, file_sha256

MAX_LEN = 12  # what the `processed` fixture (conftest.py) tokenizes to


def test_token_shards_align_with_the_sample_shards_row_by_row(processed):
    out, report = processed
    tok = ds.load_tokenizer(out)
    for shard in report.shards:
        tokens = pq.read_table(out.tokens(shard.index)).to_pylist()
        samples = pq.read_table(out.samples(shard.index)).to_pylist()
        assert [t["sample_id"] for t in tokens] == [s["sample_id"] for s in samples]
        for t, s in zip(tokens, samples, strict=True):
            assert t["caption_ids"] == tok.encode([c["text"] for c in s["captions"]], MAX_LEN)
            assert t["question_ids"] == tok.encode([q["question"] for q in s["qa"]], MAX_LEN)


def test_a_token_shard_is_kept_while_its_inputs_are_unchanged(processed):
    out, _ = processed
    before = out.tokens(1).stat().st_mtime_ns, out.tokens(1).read_bytes()
    tokens.tokenize_shard(out, 1, MAX_LEN)
    assert (out.tokens(1).stat().st_mtime_ns, out.tokens(1).read_bytes()) == before
    tokens.tokenize_shard(out, 1, 4)  # another max_len: written again
    meta = read_metadata(out.tokens(1))["spec"]
    assert meta == {"samples": file_sha256(out.samples(1)), "tokenizer": file_sha256(out.tokenizer), "max_len": 4}


def test_the_manifest_counts_records_splits_texts_and_names_every_file(processed):
    out, report = processed
    manifest = tokens.build_manifest(out, report, {"ingest_config_digest": "abc"})
    assert ds.read_manifest(out) == manifest
    assert (manifest["records_in"], manifest["accepted"], manifest["rejected"]) == (8, 6, 2)
    assert manifest["rejects_by_reason"] == {"duplicate": 1, "missing_file": 1}
    assert manifest["texts"] == {"captions": 12, "questions": 6}
    assert manifest["source"]["format"] == "jsonl" and manifest["ingest_config_digest"] == "abc"
    assert [(s["samples"], s["tokens"], s["rejects"], s["rows"], s["rejected"]) for s in manifest["shards"]] == [
        ("samples-00000.parquet", "tokens-00000.parquet", "rejects-00000.parquet", 3, 0),
        ("samples-00001.parquet", "tokens-00001.parquet", "rejects-00001.parquet", 2, 1),
        ("samples-00002.parquet", "tokens-00002.parquet", "rejects-00002.parquet", 1, 1)]
    splits = [pq.read_table(out.samples(i), columns=["split"])["split"].to_pylist() for i in range(3)]
    assert [s["splits"] for s in manifest["shards"]] == [{k: v.count(k) for k in sorted(set(v))} for v in splits]
    assert manifest["splits"]["test"] == 2 and sum(manifest["splits"].values()) == 6  # s5, s6: test; s7: duplicate
    assert [s["samples_sha256"] for s in manifest["shards"]] == [file_sha256(out.samples(i)) for i in range(3)]
    assert [s["tokens_sha256"] for s in manifest["shards"]] == [file_sha256(out.tokens(i)) for i in range(3)]
    assert (manifest["tokenizer"], manifest["tokenizer_sha256"]) == ("tokenizer.json", file_sha256(out.tokenizer))
    assert manifest["digest"] == out.digest() == combined_digest(
        [file_sha256(out.samples(i)) for i in range(3)] + [file_sha256(out.tokenizer)])


def test_a_count_mismatch_is_an_error_and_writes_no_manifest(processed):
    out, report = processed
    report.records_in += 1
    with pytest.raises(RuntimeError, match="record count mismatch: 9 in, 6 accepted \\+ 2 rejected"):
        tokens.build_manifest(out, report, {})
    assert not out.manifest.exists()
