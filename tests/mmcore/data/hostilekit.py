"""Hostile datasets for the property test: a writer per source format that draws (with Hypothesis) records of
every bad kind: image files of random bytes or cut short, random, over-long and impossible paths, NUL bytes,
text in other encodings (UTF-16, Latin-1), huge fields, missing fields and fields of the wrong type.

Each writer keeps the file-level structure its format needs to be recognised at all (a file that is not its
format stops an ingest before any work, by design): what is hostile is the records.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tests.mmcore.data.ingest.ingestkit import bomb_png

Draw = Callable[[st.SearchStrategy], Any]
HUGE = "h" * 140_000  # over the csv module's default field limit and over max_text_chars


def _image(colour: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


GOOD = [_image((200, 10, 10)), _image((10, 200, 10), "JPEG"), _image((10, 10, 200), "GIF"), _image((90, 90, 9))]
BAD = [b"", b"not an image at all", GOOD[0][:40], GOOD[1][:150], GOOD[1][: len(GOOD[1]) // 2], bomb_png(),
       _image((1, 2, 3), size=(2, 2)), _image((1, 2, 3), size=(90, 10)), b"\x89PNG\r\n\x1a\n" + bytes(30)]
IMAGE_BYTES = st.one_of(st.sampled_from(GOOD), st.sampled_from(BAD), st.binary(max_size=64))
BAD_PATHS = ["", ".", "/", "/etc/hostname", "../outside.png", "images", "images/", "images/a\x00b.png",
             "images/" + "n" * 300 + ".png", "images/" + "d/" * 2100 + "x.png", "images/\udc80.png",
             "images/loop.png", "images/out.png", "a\\b.png", "images/missing.png"]
TEXTS = st.one_of(st.text(max_size=12), st.sampled_from(["", "  ", "a\x00b", HUGE, "x\udc80", "红色的圆", '"', "\r"]))
WRONG = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**30), st.floats(), st.text(max_size=4),
                  st.lists(st.integers(0, 3), max_size=2),
                  st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-16-be", "latin-1", "utf-8-sig"])


def encode(text: str, encoding: str) -> bytes:
    """Any text in any encoding: lone surrogates pass as their (invalid) bytes, what Latin-1 lacks becomes '?'."""
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


def _images(root: Path, draw: Draw, folder: str = "images", n: int = 4) -> list[str]:
    """Up to `n` image files of hostile bytes, plus a symlink loop and a symlink out of the root."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = [f"{folder}/{i}.png" for i in range(draw(st.integers(1, n)))]
    for name in names:
        (root / name).write_bytes(draw(IMAGE_BYTES))
    os.symlink("loop.png", root / folder / "loop.png")
    (root.parent / "outside.png").write_bytes(GOOD[3])
    os.symlink(os.path.relpath(root.parent / "outside.png", root / folder), root / folder / "out.png")
    return names


def _path(draw: Draw, names: list[str]) -> str:
    return draw(st.one_of(st.sampled_from(names), st.sampled_from(BAD_PATHS), st.text(max_size=16)))


def _maybe(draw: Draw, value: Any) -> Any:
    """`value`, or (now and then) a value of the wrong type."""
    return draw(st.one_of(st.just(value), st.just(value), WRONG))


def write_jsonl(root: Path, draw: Draw) -> None:
    names = _images(root, draw)
    lines = [json.dumps({"image": names[0], "captions": {"en": ["a first good record"]}}).encode()]
    for _ in range(draw(st.integers(1, 7))):
        record = {"id": _maybe(draw, draw(TEXTS)), "image": _maybe(draw, _path(draw, names)),
                  "captions": _maybe(draw, {draw(st.sampled_from(["en", "zh", ""])): [draw(TEXTS)]}),
                  "qa": _maybe(draw, [{"question": draw(TEXTS), "answer": _maybe(draw, draw(TEXTS))}]),
                  "split": draw(st.sampled_from([None, "train", "test", "nope"])), "extra": 1}
        keep = draw(st.sets(st.sampled_from(sorted(record)), min_size=1))
        line = json.dumps({k: v for k, v in record.items() if k in keep})
        lines.append(draw(st.one_of(st.just(encode(line, draw(ENCODINGS))), st.binary(max_size=30).map(
            lambda b: b.replace(b"\n", b"")), st.just(b"[" * 50_000))))
    (root / "annotations.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def write_csv(root: Path, draw: Draw) -> None:
    names = _images(root, draw)
    name = draw(st.sampled_from(["captions.csv", "captions.tsv"]))
    delimiter = "\t" if name.endswith(".tsv") else ","
    rows = [encode(delimiter.join(["image", "caption", "lang"]) + "\n", "utf-8"),
            encode(delimiter.join([names[0], "a first good record", "en"]) + "\n", "utf-8")]
    for _ in range(draw(st.integers(1, 7))):
        fields = [_path(draw, names), draw(TEXTS), draw(st.sampled_from(["en", "zh", ""]))]
        fields = fields[: draw(st.integers(0, 3))] + draw(st.lists(TEXTS, max_size=1))  # missing or extra fields
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(fields)
        line = buf.getvalue()
        raw = draw(st.one_of(st.just(line), st.just('"' + delimiter.join(fields)), st.just(line * 2)))
        rows.append(encode(raw, draw(ENCODINGS)))
    (root / name).write_bytes(b"".join(rows))


def write_coco(root: Path, draw: Draw) -> None:
    names = _images(root, draw)
    ids = list(range(len(names))) + ["s", 10**20]
    images = [{"id": _maybe(draw, i), "file_name": _maybe(draw, _path(draw, [n.removeprefix("images/")
                                                                             for n in names]))} for i in ids]
    anns = [{"image_id": _maybe(draw, draw(st.sampled_from([*ids, 99, "99"]))), "caption": _maybe(draw, draw(TEXTS))}
            for _ in range(draw(st.integers(0, 8)))]
    anns = [{k: v for k, v in a.items() if draw(st.integers(0, 5))} for a in anns]  # now and then a missing key
    doc = {"images": images + draw(st.lists(WRONG, max_size=1)),
           "annotations": anns + draw(st.lists(WRONG, max_size=1))}
    (root / "captions_train2017.json").write_text(json.dumps(doc), encoding="utf-8")


def write_vqa(root: Path, draw: Draw) -> None:
    root.mkdir(parents=True)
    for image_id in range(draw(st.integers(1, 3))):
        (root / f"COCO_train2014_{image_id:012d}.jpg").write_bytes(draw(IMAGE_BYTES))
    questions = [{"question_id": 0, "image_id": 0, "question": "what is it?"}]  # one pair that matches
    answers = [{"question_id": 0, "image_id": 0, "answers": [{"answer": "a thing"}]}]
    for qid in range(1, draw(st.integers(1, 6))):
        image_id = draw(st.integers(0, 4))
        questions.append({"question_id": _maybe(draw, qid), "image_id": _maybe(draw, image_id),
                          "question": _maybe(draw, draw(TEXTS))})
        answers.append({"question_id": _maybe(draw, draw(st.sampled_from([qid, qid, 77]))),
                        "image_id": _maybe(draw, draw(st.sampled_from([image_id, image_id, 9]))),
                        "answers": _maybe(draw, [{"answer": _maybe(draw, draw(TEXTS))}]),
                        "answer_type": _maybe(draw, "other")})
    answers = draw(st.permutations(answers)) + draw(st.lists(WRONG, max_size=1))
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "v2_mscoco_train2014_annotations.json").write_text(json.dumps({"annotations": answers}))


def write_easy_vqa(root: Path, draw: Draw) -> None:
    (root / "train" / "images").mkdir(parents=True)
    for name in draw(st.lists(st.sampled_from(["0", "1", "2", "007", "x", "n" * 250]), max_size=4, unique=True)):
        (root / "train" / "images" / f"{name}.png").write_bytes(draw(IMAGE_BYTES))
    items = [["what shape is it?", "circle", 0]] + [
        draw(st.one_of(st.tuples(TEXTS, TEXTS, st.integers(-1, 3)).map(list), st.lists(WRONG, max_size=4), WRONG))
        for _ in range(draw(st.integers(0, 6)))]
    (root / "train" / "questions.json").write_text(json.dumps(items), encoding="utf-8")


def write_folder(root: Path, draw: Draw) -> None:
    root.mkdir(parents=True)
    stems = draw(st.lists(st.one_of(st.sampled_from([b"a", b"sub/b", b"\xff\xfe", b"n" * 250, b"caf\xe9", b" "]),
                                    st.text("abc-_ ", min_size=1, max_size=5).map(str.encode)),
                          min_size=1, max_size=5, unique=True))
    for stem in stems:
        os.makedirs(os.path.dirname(os.path.join(bytes(root), stem)) or bytes(root), exist_ok=True)
        if draw(st.integers(0, 4)):  # now and then a caption file without its image
            Path(os.fsdecode(bytes(root) + b"/" + stem + b".png")).write_bytes(draw(IMAGE_BYTES))
        if draw(st.integers(0, 4)):  # and an image without its caption file
            text = "\n".join(draw(st.lists(TEXTS, max_size=3)))
            Path(os.fsdecode(bytes(root) + b"/" + stem + b".txt")).write_bytes(encode(text, draw(ENCODINGS)))
    Path(root / "first.png").write_bytes(GOOD[0])  # the folder is recognised by an image with its captions
    Path(root / "first.txt").write_text("a red square\n", encoding="utf-8")


def write_webdataset(root: Path, draw: Draw) -> None:
    root.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("first.png", GOOD[0])
        add("first.txt", b"a red square")
        for i in range(draw(st.integers(1, 5))):
            key = draw(st.sampled_from([f"k{i}", f"k{i}", "n" * 300 + str(i), f"caf\udce9{i}", f"sub/{i}"]))
            for ext in draw(st.sets(st.sampled_from(["png", "jpg", "txt", "json", "cls"]), min_size=1)):
                data = {"png": draw(IMAGE_BYTES), "jpg": draw(IMAGE_BYTES), "cls": b"3",
                        "txt": encode(draw(TEXTS), draw(ENCODINGS)),
                        "json": draw(st.one_of(st.binary(max_size=20), st.builds(
                            lambda c, q: json.dumps({"caption": c, "qa": q}).encode(), WRONG | TEXTS, WRONG)))}[ext]
                add(f"{key}.{ext}", data)
    data = buf.getvalue()
    cut = draw(st.sampled_from([len(data), len(data), 3000 + draw(st.integers(0, max(0, len(data) - 3000)))]))
    (root / "shard-000.tar").write_bytes(data[:cut])


def write_parquet(root: Path, draw: Draw) -> None:
    names = _images(root, draw)
    n = draw(st.integers(1, 6))
    storable = TEXTS.filter(lambda t: "\udc80" not in t)  # Arrow strings are UTF-8: a Parquet file holds no others
    kind = draw(st.sampled_from(["bytes", "path", "struct"]))
    images = [draw(st.one_of(st.none(), IMAGE_BYTES)) for _ in range(n)]
    paths = [draw(st.one_of(st.none(), st.sampled_from(names), st.sampled_from(BAD_PATHS[:10]))) for _ in range(n)]
    columns = {"image": {"bytes": pa.array(images, pa.binary()), "path": pa.array(paths, pa.string()),
                         "struct": pa.array([{"bytes": b, "path": p} for b, p in zip(images, paths, strict=True)],
                                            pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}[kind]}
    columns[draw(st.sampled_from(["caption", "text"]))] = pa.array([draw(st.none() | storable) for _ in range(n)],
                                                                      pa.string())
    if draw(st.booleans()):
        columns["question"] = pa.array([draw(st.none() | storable) for _ in range(n)], pa.string())
        columns["answer"] = pa.array([draw(st.none() | storable) for _ in range(n)], pa.string())
    if draw(st.booleans()):
        columns["id"] = pa.array([draw(st.sampled_from(["a", "a", "b", "", "n" * 300, None])) for _ in range(n)],
                                 pa.string())
    pq.write_table(pa.table(columns), root / "part-0.parquet")


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "coco": write_coco, "vqa": write_vqa, "easy-vqa": write_easy_vqa,
           "folder": write_folder, "webdataset": write_webdataset, "parquet": write_parquet}
