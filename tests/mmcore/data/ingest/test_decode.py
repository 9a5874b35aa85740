"""One record -> an accepted or a rejected row; splits by content digest; 64-bit record fingerprints."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.ingest import SPLITS, assign_split, process_record
from mmcore.data.ingest.decode import as_duplicate, key64, ordered_map
from mmcore.data.shards import decode_png

CFG = IngestConfig(image_size=16, min_side=8, max_text_chars=20)
SHARES = (0.8, 0.1, 0.1)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (24, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _record(number: int = 3, image: str = "images/a.png", split: str | None = None, **ann) -> R.SourceRecord:
    annotation = R.Annotation(image=image, captions=ann.pop("captions", {"en": [" a red box "]}), **ann)
    return R.SourceRecord(number, f"r{number}", f"annotations.jsonl line {number}", annotation, split=split)


def test_split_assignment_cuts_the_digest_range_by_the_shares():
    # the first 15 hex digits as a fraction of 1: 0.0, 0.867, 0.933 against train < 0.8 <= val < 0.9 <= test
    assert [assign_split(h * 64, SHARES) for h in "0de"] == ["train", "val", "test"]
    # a given train split is cut 8:1 into train and val: 0.867 < 0.889 <= 0.933
    assert [assign_split(h * 64, SHARES, "train") for h in "0de"] == ["train", "train", "val"]
    assert [assign_split("f" * 64, SHARES, given) for given in ("val", "test")] == ["val", "test"]
    assert SPLITS == ("train", "val", "test")


def test_split_assignment_is_deterministic_follows_shares_and_keeps_source_splits():
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    splits = [assign_split(d, SHARES) for d in digests]
    assert splits == [assign_split(d, SHARES) for d in digests]
    assert 0.77 < splits.count("train") / 5000 < 0.83
    assert 0.08 < splits.count("test") / 5000 < 0.12
    assert {assign_split(d, SHARES, "test") for d in digests} == {"test"}
    from_train = [assign_split(d, SHARES, "train") for d in digests]
    assert set(from_train) == {"train", "val"} and 0.86 < from_train.count("train") / 5000 < 0.92  # 8:1


def test_key64_is_a_stable_64_bit_fingerprint():
    assert key64("img1") == 13608608700109717863  # blake2b, 8 bytes, big-endian: the same in every process
    assert key64("img1#2") != key64("img1") and key64("") < 2**64


def test_a_good_record_becomes_an_accepted_row(tmp_path: Path):
    data = _png((200, 10, 30))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(data)
    rec = _record(qa=[R.QA(question=" what colour? ", answer=" Red ", type="color", answers=[" Red ", "red", "Pink"],
                           question_type="what colour", question_id="17")], split="val")
    row = process_record(str(tmp_path), CFG, rec, "r3")
    sha = hashlib.sha256(data).hexdigest()
    image = row.pop("image")
    assert row == {
        "sample_id": "r3", "record": 3, "record_key": "r3", "record_digest": rec.digest(),
        "where": "annotations.jsonl line 3", "image_path": "images/a.png", "image_sha256": sha, "split": "val",
        "width": 24, "height": 12, "captions": [{"lang": "en", "text": "a red box"}],
        "qa": [{"question": "what colour?", "answer": "red", "type": "color", "answers": ["red", "red", "pink"],
                "answer_type": None, "question_type": "what colour", "question_id": "17"}],
    }
    assert decode_png(image).shape == (3, 16, 16)


def test_a_bad_record_becomes_a_rejection_with_its_reason(tmp_path: Path):
    def reject(rec: R.SourceRecord, problem: R.Problem | None = None) -> tuple:
        row = process_record(str(tmp_path), CFG, rec, rec.key, problem)
        assert row["record_digest"] == rec.digest() and row["duplicate_of"] is None and "image" not in row
        return row["reason"], row["message"]

    assert reject(_record()) == ("missing_file", f"{tmp_path}/images/a.png does not exist")
    assert reject(_record(captions={"en": ["x" * 21]}))[0] == "text_too_long"
    assert reject(_record(image="../outside.png"))[0] == "outside_root"
    assert reject(_record(), R.Problem(R.DUPLICATE, "key 'r3' repeats record 1")) == (
        "duplicate", "key 'r3' repeats record 1")  # a problem found while planning wins
    embedded = R.SourceRecord(4, "r4", "part-0 row 4", R.Annotation(image="x.png", captions={"en": ["x"]}),
                              image_bytes=_png((1, 2, 3), (4, 4)))
    assert reject(embedded) == ("too_small", "4x4 is below the minimum side 8")


def test_a_duplicate_keeps_the_record_and_names_the_sample_kept():
    row = {"record": 9, "sample_id": "b", "record_key": "b", "record_digest": "d", "where": "line 9",
           "image_path": "images/b.png", "image": b"png", "split": "train"}
    assert as_duplicate(row, "a") == {
        "record": 9, "sample_id": "b", "record_key": "b", "record_digest": "d", "where": "line 9",
        "image_path": "images/b.png", "reason": "duplicate",
        "message": "same image bytes as sample 'a', which was kept", "duplicate_of": "a"}


def test_a_process_pool_gives_the_rows_in_source_order(tmp_path: Path):
    (tmp_path / "images").mkdir()
    items = []
    for i in range(40):  # several batches of 16
        (tmp_path / "images" / f"{i}.png").write_bytes(_png((i, 100, 200)))
        items.append((_record(i + 1, f"images/{i}.png"), f"r{i + 1}", None))
    one = list(ordered_map(str(tmp_path), CFG, items, workers=1))
    assert [r["record"] for r in one] == list(range(1, 41))
    assert list(ordered_map(str(tmp_path), CFG, items, workers=2)) == one
