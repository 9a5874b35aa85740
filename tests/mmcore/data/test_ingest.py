"""Ingest on a small canonical dataset with one bad record of every kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data.ingest import assign_split, plan_chunks, process_chunk
from mmcore.data.records import ANNOTATIONS

CFG = IngestConfig(image_size=32, shard_size=7, min_side=16, max_side=512, max_aspect=3.0, max_text_chars=200,
                   vocab_size=200)


def _good(i: int) -> dict:
    return {"id": f"g{i}", "image": f"images/g{i}.png", "captions": {"en": [f"a red circle number {i}"],
                                                                     "zh": ["一个红色圆形"]},
            "qa": [{"question": "what color is the circle?", "answer": "Red", "type": "color"}]}


@pytest.fixture()
def raw(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """12 good records and one bad record per rejection reason; returns root and expected reasons."""
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
    Image.new("P", (40, 40)).save(root / "images" / "palette.png")  # accepted: converted to RGB
    (tmp_path / "secret.png").write_bytes((root / "images" / "g0.png").read_bytes())
    bad = {
        "b_missing": {"image": "images/nope.png", "captions": {"en": ["x"]}},
        "b_broken": {"image": "images/broken.png", "captions": {"en": ["x"]}},
        "b_tiny": {"image": "images/tiny.png", "captions": {"en": ["x"]}},
        "b_huge": {"image": "images/huge.png", "captions": {"en": ["x"]}},
        "b_wide": {"image": "images/wide.png", "captions": {"en": ["x"]}},
        "b_empty": {"image": "images/g1.png", "captions": {"en": ["   "]}},
        "b_long": {"image": "images/g1.png", "captions": {"en": ["y" * 201]}},
        "b_notext": {"image": "images/g1.png"},
        "b_outside": {"image": "../secret.png", "captions": {"en": ["x"]}},
        "b_schema": {"image": "images/g1.png", "captions": {"en": ["x"]}, "colour": "red"},
    }
    reasons = {"b_missing": "missing_file", "b_broken": "undecodable", "b_tiny": "too_small",
               "b_huge": "too_large", "b_wide": "bad_aspect", "b_empty": "empty_text",
               "b_long": "text_too_long", "b_notext": "no_text", "b_outside": "outside_root",
               "b_schema": "malformed"}
    for key, rec in bad.items():
        lines.append(json.dumps({"id": key, **rec}))
    lines.append("{this is not json")
    lines.append("")  # blank lines are not records
    lines.append(json.dumps({"id": "palette", "image": "images/palette.png", "captions": {"en": ["dark"]}}))
    (root / ANNOTATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, reasons


def _ingest(root: Path, out: Path) -> tuple[list, list]:
    chunks = plan_chunks(root / ANNOTATIONS, CFG.shard_size)
    return chunks, [process_chunk(root, c, CFG, out) for c in chunks]


def test_every_record_is_accepted_or_rejected_with_its_reason(raw, tmp_path):
    root, reasons = raw
    chunks, results = _ingest(root, tmp_path / "out")
    assert sum(c.records for c in chunks) == 24  # 12 good + 10 bad + 1 not JSON + palette; blank skipped
    samples = ds.read_tables([r.samples_path for r in results]).to_pylist()
    rejects = ds.read_tables([r.rejects_path for r in results]).to_pylist()
    assert len(samples) + len(rejects) == 24
    assert sorted(s["sample_id"] for s in samples) == sorted([f"g{i}" for i in range(12)] + ["palette"])
    got = {r["sample_id"]: r["reason"] for r in rejects if r["sample_id"]}
    assert got == reasons
    not_json = [r for r in rejects if r["sample_id"] is None]
    assert len(not_json) == 1 and not_json[0]["reason"] == "malformed" and "not JSON" in not_json[0]["message"]
    assert all(r["message"] for r in rejects)
    assert {r["record"] for r in rejects} <= set(range(1, 26))


def test_images_are_resized_rgb_and_split_by_content(raw, tmp_path):
    root, _ = raw
    _, results = _ingest(root, tmp_path / "out")
    rows = ds.read_tables([r.samples_path for r in results]).to_pylist()
    for row in rows:
        assert ds.decode_png(row["image"]).shape == (3, 32, 32)
        assert row["split"] == assign_split(row["image_sha256"], CFG.split)
    assert next(r for r in rows if r["sample_id"] == "g0")["qa"][0]["answer"] == "red"  # answers normalised


def test_split_assignment_is_deterministic_and_follows_shares():
    import hashlib

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    splits = [assign_split(d, (0.8, 0.1, 0.1)) for d in digests]
    assert splits == [assign_split(d, (0.8, 0.1, 0.1)) for d in digests]
    assert 0.77 < splits.count("train") / 5000 < 0.83
    assert 0.08 < splits.count("test") / 5000 < 0.12


def test_rerun_keeps_finished_shards_and_redoes_missing_ones(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    _, first = _ingest(root, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    Path(first[1].samples_path).unlink()  # as if the run was killed before chunk 1 finished
    _, second = _ingest(root, out)
    assert [r.skipped for r in second] == [True, False] + [True] * (len(second) - 2)
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before
    assert not list(out.glob("*.tmp"))


def test_changed_config_does_not_reuse_shards(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    _ingest(root, out)
    chunk = plan_chunks(root / ANNOTATIONS, CFG.shard_size)[0]
    again = process_chunk(root, chunk, CFG.model_copy(update={"image_size": 24}), out)
    assert not again.skipped


def _tokenized(root: Path, out: Path) -> tuple[list, list, Path]:
    """Ingest, then the tokenizer and token shards: everything the manifest describes."""
    chunks, results = _ingest(root, out)
    tok = ds.fit_tokenizer([r.samples_path for r in results], CFG.vocab_size, out / ds.TOKENIZER)
    for r in results:
        ds.tokenize_shard(r.samples_path, tok, 16)
    return chunks, results, tok


def test_tokens_and_manifest(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    chunks, results, tok = _tokenized(root, out)
    manifest = ds.build_manifest(out, results, sum(c.records for c in chunks), root / ANNOTATIONS, tok, {})
    assert manifest["records_in"] == 24 and manifest["accepted"] == 13 and manifest["rejected"] == 11
    assert manifest["rejects_by_reason"]["malformed"] == 2
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
    _, results, tok = _tokenized(root, out)
    with pytest.raises(RuntimeError, match="record count mismatch"):
        ds.build_manifest(out, results, 25, root / ANNOTATIONS, tok, {})


def test_missing_annotation_file_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="canonical layout"):
        plan_chunks(tmp_path / ANNOTATIONS, 10)


def test_synthetic_dataset_ingests_without_rejects(shapes_raw, tmp_path):
    shutil.copytree(shapes_raw, tmp_path / "shapes")
    chunks = plan_chunks(tmp_path / "shapes" / ANNOTATIONS, 50)
    results = [process_chunk(tmp_path / "shapes", c, CFG, tmp_path / "out") for c in chunks]
    assert [c.records for c in chunks] == [50, 50, 20]
    assert sum(r.accepted for r in results) == 120 and sum(r.rejected for r in results) == 0


def test_an_edited_line_makes_its_shard_stale(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    _ingest(root, out)
    text = (root / ANNOTATIONS).read_text(encoding="utf-8")
    (root / ANNOTATIONS).write_text(text.replace("number 1\"", "number 9\""), encoding="utf-8")
    _, again = _ingest(root, out)
    assert [r.skipped for r in again] == [False] + [True] * (len(again) - 1)
    captions = ds.read_tables([again[0].samples_path]).to_pylist()[1]["captions"]
    assert captions[0]["text"] == "a red circle number 9"
