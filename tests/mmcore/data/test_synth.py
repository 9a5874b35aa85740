"""Tests for the synthetic shapes dataset: layout, determinism, label correctness, pixels, balance."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcore.data.synth import COLORS, ZH_COLORS, ZH_SHAPES, SynthSummary, generate_shapes

POSITIONS = [
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
]  # fmt: skip
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def read_annotations(root: Path) -> list[dict]:
    lines = (root / "annotations.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, 500, seed=0)
    return root, read_annotations(root)


def test_same_seed_gives_identical_bytes_and_different_seed_differs(tmp_path):
    a = generate_shapes(tmp_path / "a", 30, seed=3)
    generate_shapes(tmp_path / "b", 30, seed=3)
    generate_shapes(tmp_path / "c", 30, seed=4)
    files_a, files_b, files_c = (snapshot(tmp_path / name) for name in "abc")
    assert a == SynthSummary(root=tmp_path / "a", images=30, captions=120, questions=a.questions)
    assert len(files_a) == 31  # 30 images + annotations, no leftover temp files
    assert files_a == files_b
    assert files_a["annotations.jsonl"] != files_c["annotations.jsonl"]
    assert files_a["images/000000.png"] != files_c["images/000000.png"]


def test_more_images_keep_the_first_ones_and_rerun_is_identical(tmp_path):
    generate_shapes(tmp_path / "small", 20, seed=7)
    generate_shapes(tmp_path / "big", 30, seed=7)
    small, big = snapshot(tmp_path / "small"), snapshot(tmp_path / "big")
    for i in range(20):
        assert small[f"images/{i:06d}.png"] == big[f"images/{i:06d}.png"]
    assert big["annotations.jsonl"].startswith(small["annotations.jsonl"])
    generate_shapes(tmp_path / "small", 20, seed=7)  # rerun over an existing dataset
    assert snapshot(tmp_path / "small") == small


@pytest.mark.parametrize("image_size", [32, 64, 100])
def test_layout_keys_captions_qa_and_images(tmp_path, image_size):
    summary = generate_shapes(tmp_path, 40, seed=1, image_size=image_size)
    records = read_annotations(tmp_path)
    assert [r["id"] for r in records] == [f"{i:06d}" for i in range(40)]
    assert summary.questions == sum(len(r["qa"]) for r in records)
    for r in records:
        assert list(r) == ["id", "image", "captions", "qa", "meta"]
        assert r["image"] == f"images/{r['id']}.png"
        assert list(r["captions"]) == ["en", "zh"]
        for lang in ("en", "zh"):
            assert len(r["captions"][lang]) == 2 and all(r["captions"][lang])
        assert 6 <= len(r["qa"]) <= 8
        assert len({qa["question"] for qa in r["qa"]}) == len(r["qa"])
        for qa in r["qa"]:
            assert list(qa) == ["question", "answer", "type"] and qa["answer"] == qa["answer"].lower()
        assert list(r["meta"]) == ["shapes"] and 1 <= len(r["meta"]["shapes"]) <= 3
        with Image.open(tmp_path / r["image"]) as image:
            assert image.mode == "RGB" and image.size == (image_size, image_size)


def expected_answer(question: str, shapes: list[dict]) -> tuple[str, str]:
    """Answer and type of `question`, re-derived from the scene description alone."""

    def only(**where: str) -> dict:
        matches = [s for s in shapes if all(s[k] == v for k, v in where.items())]
        assert len(matches) == 1, f"ambiguous or absent referent in {question!r}"
        return matches[0]

    if question == "how many shapes are there?":
        return str(len(shapes)), "count"
    if m := re.fullmatch(r"how many (\w+) shapes are there\?", question):
        return str(sum(s["color"] == m[1] for s in shapes)), "count"
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        return only(shape=m[1])["color"], "color"
    if m := re.fullmatch(r"what shape is (?:at|on|in) the ([\w ]+)\?", question):
        return only(position=m[1])["shape"], "shape"
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        return only(color=m[1], shape=m[2])["position"], "position"
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        present = any(s["color"] == m[1] and s["shape"] == m[2] for s in shapes)
        return ("yes" if present else "no"), "yes/no"
    if m := re.fullmatch(r"is the (\w+) (\w+) large or small\?", question):
        return only(color=m[1], shape=m[2])["size"], "size"
    raise AssertionError(f"unexpected question {question!r}")


def test_answers_and_captions_match_the_scene(dataset):
    _, records = dataset
    for r in records[:200]:
        shapes = r["meta"]["shapes"]
        cells = [POSITIONS.index(s["position"]) for s in shapes]
        assert cells == sorted(set(cells)), "shapes must be in distinct cells, in reading order"
        for qa in r["qa"]:
            assert (qa["answer"], qa["type"]) == expected_answer(qa["question"], shapes)
        en, zh = r["captions"]["en"], r["captions"]["zh"]
        assert en[1].startswith(COUNT_WORDS[len(shapes)] + " shape")
        assert zh[1].startswith("图中有")
        for s in shapes:
            phrase = f"a {s['size']} {s['color']} {s['shape']}"
            assert all(phrase in caption for caption in en), (phrase, en)
            assert all(ZH_COLORS[s["color"]] + ZH_SHAPES[s["shape"]] in caption for caption in zh), zh
        # en[0] lists shapes in reading order, en[1] large ones first (then reading order).
        described = [(s["size"], s["color"], s["shape"]) for s in shapes]
        assert re.findall(r"a (large|small) (\w+) (\w+)", en[0]) == described
        by_size = [d for d in described if d[0] == "large"] + [d for d in described if d[0] == "small"]
        assert re.findall(r"a (large|small) (\w+) (\w+)", en[1]) == by_size


@pytest.mark.parametrize("image_size", [32, 64, 100])
def test_pixels_show_the_described_shapes(tmp_path, image_size):
    generate_shapes(tmp_path, 60, seed=2, image_size=image_size)
    areas: dict[tuple[str, str], list[int]] = {}
    for r in read_annotations(tmp_path):
        pixels = np.asarray(Image.open(tmp_path / r["image"]), dtype=np.int32)  # (H, W, 3)
        by_cell = {POSITIONS.index(s["position"]): s for s in r["meta"]["shapes"]}
        for cell, s in by_cell.items():
            row, col = divmod(cell, 3)
            y, x = int((row + 0.5) * image_size / 3), int((col + 0.5) * image_size / 3)
            window = pixels[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3)
            distance = np.linalg.norm(window - np.array(COLORS[s["color"]]), axis=1).min()
            assert distance < 40, (r["id"], s)
        # Shape pixels are saturated, the background is near grey: every saturated pixel
        # must lie inside an occupied cell, carry that cell's colour, and avoid the border.
        saturated = pixels.max(axis=2) - pixels.min(axis=2) > 80
        border = np.concatenate([saturated[0], saturated[-1], saturated[:, 0], saturated[:, -1]])
        assert not border.any(), r["id"]
        ys, xs = np.nonzero(saturated)
        cells = (3 * ys // image_size) * 3 + 3 * xs // image_size
        assert set(cells.tolist()) == set(by_cell), r["id"]
        for cell, s in by_cell.items():
            inside = pixels[ys[cells == cell], xs[cells == cell]]
            assert np.abs(inside - np.array(COLORS[s["color"]])).max() <= 6, (r["id"], s)
            areas.setdefault((s["shape"], s["size"]), []).append(len(inside))
    for shape in ("circle", "square", "triangle", "diamond"):
        if (shape, "large") in areas and (shape, "small") in areas:
            assert min(areas[shape, "large"]) > max(areas[shape, "small"]), shape


def test_answer_distribution_is_balanced(dataset):
    _, records = dataset
    answers = Counter(qa["answer"] for r in records[:200] for qa in r["qa"])
    assert max(answers.values()) / sum(answers.values()) <= 0.30, answers.most_common(5)
    yes_no = answers["yes"] / (answers["yes"] + answers["no"])
    assert 0.35 <= yes_no <= 0.65, yes_no
    assert set(Counter(qa["type"] for r in records[:200] for qa in r["qa"])) == {
        "count", "color", "shape", "position", "yes/no", "size",
    }  # fmt: skip


def test_most_captions_describe_exactly_one_image(dataset):
    _, records = dataset
    captions = Counter(r["captions"]["en"][0] for r in records)
    unique_share = sum(n == 1 for n in captions.values()) / len(records)
    assert unique_share >= 0.8, unique_share


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"images": 0}, "images .*got 0"), ({"images": 5, "image_size": 16}, "image_size .*got 16")],
)
def test_rejects_bad_arguments(tmp_path, kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        generate_shapes(tmp_path, **kwargs)


def test_last_images_can_form_the_test_split(tmp_path):
    generate_shapes(tmp_path, 10, seed=1, image_size=32, test_images=4)
    records = [json.loads(line) for line in (tmp_path / "annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["split"] for r in records] == ["train"] * 6 + ["test"] * 4
    with pytest.raises(ValueError, match="test_images"):
        generate_shapes(tmp_path / "x", 4, test_images=4)
