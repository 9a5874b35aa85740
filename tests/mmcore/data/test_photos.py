"""The photos fixture: determinism, the three layouts it is written in, stored forms, and labels that are right."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmcore.data.photo_text import NUMBERS, PLURALS, captions, questions
from mmcore.data.photos import COLORS, FRAMES, SUBSETS, PhotoSummary, generate_photos, render, sample_scene
from mmcore.data.sources import open_source
from mmcore.data.sources.karpathy import KarpathySource

IMAGES = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> PhotoSummary:
    return generate_photos(tmp_path_factory.mktemp("photos"), IMAGES, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text(encoding="utf-8"))


def test_same_seed_same_bytes_and_a_smaller_fixture_starts_the_same(photos, tmp_path):
    again = generate_photos(tmp_path / "again", IMAGES, seed=0)
    assert _files(photos.root) == _files(again.root) and again.photos == photos.photos
    assert len(_files(photos.root)) == IMAGES + 10  # pictures, 9 COCO/VQA files, dataset_coco.json; no temp files
    small = generate_photos(tmp_path / "small", 12, seed=0)
    first = [p.file for p in small.photos[:8]]  # train2017 in both
    assert [_files(small.root)[f] for f in first] == [_files(photos.root)[f] for f in first]
    other = generate_photos(tmp_path / "other", 4, seed=1)
    assert _files(other.root)[other.photos[0].file] != _files(photos.root)[photos.photos[0].file]
    with pytest.raises(ValueError, match="images must be >= 4"):
        generate_photos(tmp_path / "x", 3)


def test_pictures_are_photo_sized_and_stored_rotated_grey_or_cmyk(photos):
    forms = Counter((p.mode, p.orientation) for p in photos.photos)
    assert forms == {("RGB", 1): 14, ("RGB", 6): 2, ("RGB", 8): 2, ("RGB", 3): 2, ("L", 1): 2, ("CMYK", 1): 2}
    for p in photos.photos:
        with Image.open(photos.root / p.file) as img:
            assert img.format == "JPEG" and img.mode == p.mode
            assert img.getexif().get(0x0112, 1) == p.orientation
            upright = ImageOps.exif_transpose(img).convert("RGB")
        assert upright.size == p.size and p.size in FRAMES.values() and max(p.size) / min(p.size) <= 4.0
        top, bottom = (np.median(np.asarray(upright)[r], axis=0) for r in (0, -1))
        assert np.abs(top - p.sky).max() < 25 and np.abs(bottom - p.ground).max() < 25  # sky up, ground down
    sizes = [(photos.root / p.file).stat().st_size for p in photos.photos if p.size == (640, 480)]
    assert min(sizes) > 15_000  # noise and texture: they compress like photographs, not like flat drawings


def test_coco_captions_five_per_picture_cased_and_punctuated(photos):
    docs = [_load(photos.root, f"annotations/captions_{s}2017.json") for s in ("train", "val", "test")]
    assert [len(doc["images"]) for doc in docs] == [17, 5, 2]  # Karpathy's train, val + restval, test
    per_image = Counter(a["image_id"] for doc in docs for a in doc["annotations"])
    assert set(per_image.values()) == {5} and len(per_image) == IMAGES
    texts = [a["caption"] for doc in docs for a in doc["annotations"]]
    assert all(t[0].isupper() and t.endswith(".") for t in texts)
    joined = " ".join(texts)
    assert all(clitic in joined for clitic in ("There's", "picture's", "one's", "don't"))
    assert {"T-shirt", "black-and-white", "portrait-format"} <= set(re.findall(r"[A-Za-z]+(?:-[a-z]+)+", joined))
    sources = {"coco": open_source(photos.root, "coco"), "karpathy": open_source(photos.root)}
    assert isinstance(sources["karpathy"], KarpathySource)  # detected: Karpathy's file wins in its folder
    for name, source in sources.items():
        records = list(source.records())
        assert len(records) == IMAGES and not [r.problem for r in records if r.problem], name
        assert Counter(r.split for r in records)["test"] == 2, name  # every layout has a test split
        assert all((photos.root / r.image).is_file() for r in records), name
    assert sorted(c for r in sources["karpathy"].records() for c in r.annotation.captions["en"]) == sorted(texts)


def test_vqa_files_in_the_official_layout_with_ten_answers(photos):
    qs, anns = [], []
    for subset in ("train2017", "val2017", "test2017"):
        qs += _load(photos.root, f"annotations/v2_OpenEnded_mscoco_{subset}_questions.json")["questions"]
        anns += _load(photos.root, f"annotations/v2_mscoco_{subset}_annotations.json")["annotations"]
    assert [q["question_id"] for q in qs] == [a["question_id"] for a in anns]
    assert {q["image_id"] for q in qs} == {p.image_id for p in photos.photos} and len(qs) == photos.questions
    assert 4 * IMAGES <= len(qs) <= 6 * IMAGES
    for a in anns:
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        counts = Counter(x["answer"] for x in a["answers"])
        assert a["multiple_choice_answer"] == counts.most_common(1)[0][0] and counts.most_common(1)[0][1] >= 6
        assert {x["answer_confidence"] for x in a["answers"]} <= {"yes", "maybe", "no"}
    assert {a["answer_type"] for a in anns} == {"yes/no", "number", "other"}
    assert {"what color is the", "how many", "is there a"} <= {a["question_type"] for a in anns}
    assert any(len({x["answer"] for x in a["answers"]}) > 1 for a in anns)  # annotators disagree at times
    records = list(open_source(photos.root, "vqa").records())
    assert len(records) == IMAGES and not [r.problem for r in records if r.problem]
    assert Counter(r.split for r in records) == {"train": 17, "val": 5, "test": 2}
    assert all((photos.root / r.image).is_file() for r in records)


def test_karpathy_file_cuts_val2017_into_val_test_and_restval(photos):
    doc = _load(photos.root, "dataset_coco.json")
    assert doc["dataset"] == "coco" and [e["cocoid"] for e in doc["images"]] == list(range(1, IMAGES + 1))
    assert Counter(e["split"] for e in doc["images"]) == {"train": 17, "val": 2, "test": 2, "restval": 3}
    assert all(e["filepath"] == SUBSETS[e["split"]] for e in doc["images"])
    sentence = doc["images"][0]["sentences"][0]
    assert sentence["tokens"] == re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", sentence["raw"].lower())


@pytest.mark.parametrize("seed", range(40))
def test_labels_say_what_is_drawn(seed):
    rng = np.random.default_rng([7, seed])
    scene = sample_scene(rng)
    pixels = np.asarray(render(scene, rng), dtype=np.int16)  # (H, W, 3)
    width = scene["size"][0]
    xs = [o["x"] for o in scene["objects"]]
    assert xs == sorted(xs)  # listed left to right
    for obj in scene["objects"]:
        strip = pixels[:, max(0, obj["x"] - 3):obj["x"] + 4].reshape(-1, 3)  # a column through the object
        assert (np.abs(strip - COLORS[obj["color"]]).max(axis=1) < 25).sum() >= 20, obj
        assert obj["position"] == ("left", "middle", "right")[min(2, 3 * obj["x"] // width)]
    caps = captions(scene, rng)
    kinds = Counter(o["kind"] for o in scene["objects"])
    assert len(caps) == 5 and all(o["color"] in caps[0] and o["kind"] in caps[0] for o in scene["objects"])
    for (kind, colour), n in Counter((o["kind"], o["color"]) for o in scene["objects"]).items():  # counted
        if n > 1:
            assert f"{NUMBERS[n]} {colour} {PLURALS[kind]}" in caps[1].lower() or (
                f"{NUMBERS[n]} people in {colour} t-shirts" in caps[1].lower()), (caps[1], kind, n)
        else:
            one = rf"\ban? ({colour} {kind}|person in an? {colour} T-shirt)\b"
            assert re.search(one, caps[1], re.I), (caps[1], kind)
    for qa in questions(scene, rng):
        if m := re.fullmatch(r"How many (\w+) are there\?", qa["question"]):
            kind = next(k for k, p in PLURALS.items() if p == m.group(1))
            assert qa["answer"] == str(kinds[kind])
        if m := re.fullmatch(r"Is there an? (\w+)\?", qa["question"]):
            assert qa["answer"] == ("yes" if m.group(1) in kinds else "no")


def test_greyscale_captions_name_no_colours():
    rng = np.random.default_rng(0)
    scene = {**sample_scene(rng), "grey": True}
    words = set(re.findall(r"[a-z]+", " ".join(captions(scene, rng)).lower()))
    assert not words & set(COLORS) and "black-and-white" in " ".join(captions(scene, rng)).lower()
    assert not [q for q in questions(scene, rng) if q["question_type"] == "what color is the"]
