"""Ingest on a small canonical dataset with one bad record of every kind; tokens and manifest."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data.ingest import assign_split, ingest
from mmcore.data.records import ANNOTATIONS, REASONS
from mmcore.data.sources import open_source

CFG = IngestConfig(image_size=32, shard_size=7, min_side=16, max_side=512, max_aspect=3.0, max_text_chars=200,
                   vocab_size=200)


def _good(i: int) -> dict:
    return {"id": f"g{i}", "image": f"images/g{i}.png", "captions": {"en": [f"a red circle number {i}"],
                                                                     "zh": ["一个红色圆形"]},
            "qa": [{"question": "what color is the circle?", "answer": "Red", "type": "color"}]}


def bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side x side pixels: trips Pillow's decompression-bomb guard."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", side, side) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture()
def raw(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """12 good records and at least one bad record per rejection reason; returns root and expected reasons."""
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(12):
        Image.new("RGB", (40, 40), (200, 10 * i, 30)).save(root / "images" / f"g{i}.png")
        lines.append(json.dumps(_good(i), ensure_ascii=False))
    Image.new("RGB", (8, 8)).save(root / "images" / "tiny.png")
    Image.new("RGB", (600, 400)).save(root / "images" / "huge.png")
    Image.new("RGB", (200, 40)).save(root / "images" / "wide.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    jpeg = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpeg, "JPEG")
    (root / "images" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "images" / "bomb.png").write_bytes(bomb_png())
    shutil.copy(root / "images" / "g3.png", root / "images" / "copy_of_g3.png")
    Image.new("P", (40, 40)).save(root / "images" / "palette.png")  # accepted: converted to RGB
    (tmp_path / "secret.png").write_bytes((root / "images" / "g0.png").read_bytes())
    bad = {
        "b_missing": {"image": "images/nope.png", "captions": {"en": ["x"]}},
        "b_broken": {"image": "images/broken.png", "captions": {"en": ["x"]}},
        "b_cut": {"image": "images/cut.jpg", "captions": {"en": ["x"]}},
        "b_tiny": {"image": "images/tiny.png", "captions": {"en": ["x"]}},
        "b_huge": {"image": "images/huge.png", "captions": {"en": ["x"]}},
        "b_bomb": {"image": "images/bomb.png", "captions": {"en": ["x"]}},
        "b_wide": {"image": "images/wide.png", "captions": {"en": ["x"]}},
        "b_empty": {"image": "images/g1.png", "captions": {"en": ["   "]}},
        "b_long": {"image": "images/g1.png", "captions": {"en": ["y" * 201]}},
        "b_notext": {"image": "images/g1.png"},
        "b_outside": {"image": "../secret.png", "captions": {"en": ["x"]}},
        "b_schema": {"image": "images/g1.png", "captions": {"en": ["x"]}, "colour": "red"},
        "b_same_bytes": {"image": "images/copy_of_g3.png", "captions": {"en": ["another caption"]}},
    }
    reasons = {"b_missing": "missing_file", "b_broken": "undecodable", "b_cut": "truncated", "b_tiny": "too_small",
               "b_huge": "too_large", "b_bomb": "too_large", "b_wide": "bad_aspect", "b_empty": "empty_text",
               "b_long": "text_too_long", "b_notext": "no_text", "b_outside": "outside_root",
               "b_schema": "malformed", "b_same_bytes": "duplicate"}
    for key, rec in bad.items():
        lines.append(json.dumps({"id": key, **rec}))
    lines.append("{this is not json")
    lines.append("")  # blank lines are not records
    lines.append(json.dumps({"id": "palette", "image": "images/palette.png", "captions": {"en": ["dark"]}}))
    lines.append(json.dumps({"id": "g5", "image": "images/g5.png", "captions": {"en": ["same id again"]}}))
    data = ("\n".join(lines) + "\n").encode()
    data += '{"id": "latin1", "image": "images/g2.png", "captions": {"en": ["caf\xe9"]}}\n'.encode("latin-1")
    (root / ANNOTATIONS).write_bytes(data)
    return root, reasons


RECORDS = 12 + 13 + 1 + 1 + 1 + 1  # good + bad + not JSON + palette + repeated id + latin-1


def _ingest(root: Path, out: Path, **kw):
    return ingest(open_source(root), out, CFG, **kw)


def _rows(report, kind: str) -> list[dict]:
    paths = [getattr(s, f"{kind}_path") for s in report.shards]
    return ds.read_tables(paths).to_pylist()


def test_every_record_is_accepted_or_rejected_with_its_reason(raw, tmp_path):
    root, reasons = raw
    report = _ingest(root, tmp_path / "out")
    assert report.records_in == RECORDS and report.processed == RECORDS
    samples, rejects = _rows(report, "samples"), _rows(report, "rejects")
    assert len(samples) + len(rejects) == RECORDS == report.accepted + report.rejected
    assert sorted(s["sample_id"] for s in samples) == sorted([f"g{i}" for i in range(12)] + ["palette"])
    by_id = {r["sample_id"]: r for r in rejects}
    assert {k: by_id[k]["reason"] for k in reasons} == reasons
    assert by_id["b_same_bytes"]["duplicate_of"] == "g3" and "g3" in by_id["b_same_bytes"]["message"]
    assert "decompression bomb" in by_id["b_bomb"]["message"]
    repeated = next(r for r in rejects if r["record_key"] == "g5#2")
    assert repeated["reason"] == "duplicate" and "repeats record" in repeated["message"]
    not_json = next(r for r in rejects if "not JSON" in r["message"])
    assert not_json["reason"] == "malformed" and not_json["where"] == f"{ANNOTATIONS} line 26"
    assert by_id[f"{ANNOTATIONS}:30"]["reason"] == "bad_encoding"  # blank line 27 is not a record
    assert {r["reason"] for r in rejects} == set(REASONS)  # every reason code is exercised here
    assert all(r["message"] and r["where"] for r in rejects)
    assert sorted(r["record"] for r in samples + rejects) == list(range(1, RECORDS + 1))


def test_images_are_resized_rgb_and_split_by_content(raw, tmp_path):
    root, _ = raw
    rows = _rows(_ingest(root, tmp_path / "out"), "samples")
    for row in rows:
        assert ds.decode_png(row["image"]).shape == (3, 32, 32)
        assert row["split"] == assign_split(row["image_sha256"], CFG.split)
    assert next(r for r in rows if r["sample_id"] == "g0")["qa"][0]["answer"] == "red"  # answers normalised


def test_split_assignment_is_deterministic_follows_shares_and_keeps_source_splits():
    import hashlib

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    splits = [assign_split(d, (0.8, 0.1, 0.1)) for d in digests]
    assert splits == [assign_split(d, (0.8, 0.1, 0.1)) for d in digests]
    assert 0.77 < splits.count("train") / 5000 < 0.83
    assert 0.08 < splits.count("test") / 5000 < 0.12
    assert {assign_split(d, (0.8, 0.1, 0.1), "test") for d in digests} == {"test"}
    from_train = [assign_split(d, (0.8, 0.1, 0.1), "train") for d in digests]
    assert set(from_train) == {"train", "val"} and 0.86 < from_train.count("train") / 5000 < 0.92  # 8:1


def test_workers_give_the_same_bytes_as_one_process(raw, tmp_path):
    root, _ = raw
    _ingest(root, tmp_path / "one", workers=1)
    _ingest(root, tmp_path / "two", workers=2)
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    assert one == {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}


def test_rerun_with_nothing_new_keeps_every_shard(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    _ingest(root, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = _ingest(root, out)
    assert again.processed == 0 and again.kept == RECORDS and not any(s.new for s in again.shards)
    assert again.accepted == 13 and again.records_in == RECORDS
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unfinished_shard_is_redone_and_leftovers_are_removed(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    first = _ingest(root, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    last = first.shards[-1]
    Path(last.samples_path).unlink()  # killed after writing the rejects, before the samples
    (out / f".samples-{last.index + 1:05d}.parquet.x1.tmp").write_bytes(b"half a file")
    again = _ingest(root, out)
    assert [s.new for s in again.shards] == [False] * (len(again.shards) - 1) + [True]
    assert again.processed == last.accepted + last.rejected
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_lost_middle_shard_is_reingested_into_a_new_one(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    first = _ingest(root, out)
    lost = first.shards[1]
    Path(lost.samples_path).unlink()
    again = _ingest(root, out)
    assert again.processed == lost.accepted + lost.rejected and again.kept == RECORDS - again.processed
    assert [s.index for s in again.shards if s.new] == [first.shards[-1].index + 1]
    assert again.accepted == first.accepted and again.rejected == first.rejected
    ids = [r["record_key"] for r in _rows(again, "samples") + _rows(again, "rejects")]
    assert len(ids) == len(set(ids)) == RECORDS


def _tokenized(root: Path, out: Path):
    report = _ingest(root, out)
    tok = ds.fit_tokenizer([s.samples_path for s in report.shards], CFG.vocab_size, out / ds.TOKENIZER)
    for s in report.shards:
        ds.tokenize_shard(s.samples_path, tok, 16)
    return report, tok


def test_tokens_and_manifest(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    report, tok = _tokenized(root, out)
    manifest = ds.build_manifest(out, report, tok, {})
    assert manifest["records_in"] == RECORDS and manifest["accepted"] == 13 and manifest["rejected"] == RECORDS - 13
    assert manifest["rejects_by_reason"]["malformed"] == 2 and manifest["rejects_by_reason"]["duplicate"] == 2
    assert manifest["source"]["format"] == "jsonl" and ANNOTATIONS in manifest["source"]["files"]
    assert sum(manifest["splits"].values()) == 13
    tokens = pq.read_table(out / manifest["shards"][0]["tokens"]).to_pylist()
    samples = pq.read_table(out / manifest["shards"][0]["samples"]).to_pylist()
    for t, s in zip(tokens, samples, strict=True):
        assert t["sample_id"] == s["sample_id"] and len(t["caption_ids"]) == len(s["captions"])
    loaded = ds.load_samples(out, ("train", "val", "test"))
    assert len(loaded) == 13 and loaded.images.shape == (13, 3, 32, 32)


def test_count_mismatch_is_an_error(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    report, tok = _tokenized(root, out)
    report.records_in += 1
    with pytest.raises(RuntimeError, match="record count mismatch"):
        ds.build_manifest(out, report, tok, {})


def test_synthetic_dataset_ingests_without_rejects(shapes_raw, tmp_path):
    report = ingest(open_source(shapes_raw), tmp_path / "out", CFG.model_copy(update={"shard_size": 50}))
    assert [s.accepted + s.rejected for s in report.shards] == [50, 50, 20]
    assert report.accepted == 120 and report.rejected == 0
