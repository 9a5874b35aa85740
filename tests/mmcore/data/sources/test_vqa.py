"""VQA v2 and easy-VQA readers: pairing, images by id, answers and types, bad records and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import assign_split, ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.sources.vqa import EasyVQASource, VQASource, easy_qa_type
from mmcore.data.storage import Storage
from tests.mmcore.data.sources.sourcekit import CFG, read_rows, solid_png, write_json
from tests.reference import vqa_fixture


def _q(qid: int, image_id: int, text: str) -> dict:
    return {"question_id": qid, "image_id": image_id, "question": text}


def _a(qid: int, image_id: int, answers: list[str], **extra: str) -> dict:
    return {"question_id": qid, "image_id": image_id, "answers": [{"answer": a, "answer_id": i + 1}
                                                                   for i, a in enumerate(answers)], **extra}


@pytest.fixture()
def vqa(tmp_path: Path) -> Path:
    """A train pair and a val pair; train image 42 has no file, image 77 has a question without an answer."""
    root = tmp_path / "vqa"
    for i, image_id in enumerate((9, 25, 77)):
        solid_png(root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", (60 * i, 100, 30))
    solid_png(root / "val2014" / f"COCO_val2014_{5:012d}.jpg", (3, 3, 230))
    solid_png(root / "other" / "9.png", (250, 250, 0))  # same id, other folder: the train2014/ one is preferred
    write_json(root / "v2_OpenEnded_mscoco_train2014_questions.json", {"info": {}, "questions": [
        _q(90, 9, "What color is the cat?"), _q(250, 25, "How many dogs?"), _q(91, 9, "Is it a cat?"),
        _q(420, 42, "Where is it?"), _q(770, 77, "Is it day?"), _q(771, 77, "Is it night?")]})
    write_json(root / "v2_mscoco_train2014_annotations.json", {"annotations": [
        _a(90, 9, ["black", "black", "gray"], multiple_choice_answer="Black", answer_type="other"),
        _a(91, 9, ["yes", "no", "yes"]),
        _a(250, 25, ["3", "2", "3", "2"], answer_type="number"),
        _a(420, 42, ["park"], multiple_choice_answer="park"),
        _a(771, 77, ["no"])]})
    write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [_q(50, 5, "Is it blue?")]})
    write_json(root / "v2_mscoco_val2014_annotations.json", {"annotations": [_a(50, 5, ["yes"], answer_type="yes/no")]})
    return root


def test_vqa_records_pair_files_and_find_images_by_id(vqa):
    source = open_source(vqa)
    assert isinstance(source, VQASource) and isinstance(open_source(vqa, "vqa"), VQASource)
    assert source.pairs == [("v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json"),
                            ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json")]
    recs = list(source.records())
    stem = "v2_OpenEnded_mscoco_train2014_questions"
    assert [r.key for r in recs] == [f"{stem}/9", f"{stem}/25", f"{stem}/42", f"{stem}/77",
                                     "v2_OpenEnded_mscoco_val2014_questions/5"]
    assert [r.split for r in recs] == ["train"] * 4 + ["val"]
    assert recs[0].image == "train2014/COCO_train2014_000000000009.jpg"
    assert [(q.question, q.answer, q.type) for q in recs[0].annotation.qa] == [
        ("What color is the cat?", "Black", "other"), ("Is it a cat?", "yes", "other")]
    assert [(q.answer, q.type) for q in recs[1].annotation.qa] == [("2", "number")]  # 2:2 tie -> alphabetical
    assert recs[2].problem.reason == "missing_file" and "image id 42" in recs[2].problem.message
    assert recs[3].problem.reason == "malformed" and "question_id 770 has no annotation" in recs[3].problem.message


def test_vqa_ingest(vqa, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    report = ingest(open_source(vqa), out, CFG, workers=1)
    assert report.records_in == 5 == report.accepted + report.rejected
    assert (report.accepted, report.rejected) == (3, 2)
    assert sorted(r["reason"] for r in read_rows(out, "rejects")) == ["malformed", "missing_file"]
    samples = {s["sample_id"].rsplit("/", 1)[1]: s for s in read_rows(out, "samples")}
    assert sorted(samples) == ["25", "5", "9"]
    assert samples["9"]["qa"] == [{"question": "What color is the cat?", "answer": "black", "type": "other",
                                   "answers": ["black", "black", "gray"], "answer_type": "other",
                                   "question_type": None, "question_id": "90"},
                                  {"question": "Is it a cat?", "answer": "yes", "type": "other",
                                   "answers": ["yes", "no", "yes"], "answer_type": None, "question_type": None,
                                   "question_id": "91"}]
    assert samples["5"]["split"] == "val" and samples["5"]["qa"][0]["type"] == "yes/no"
    assert samples["9"]["image_path"] == "train2014/COCO_train2014_000000000009.jpg"


def test_vqa_v2_keeps_all_ten_answers_and_the_types(tmp_path):
    """The official format: every human answer in order, the answer and question types; the majority answer
    stays `answer`, the answer type `type`. Stored answers are stripped and lower-cased, like `answer`."""
    root = vqa_fixture.write(tmp_path / "v2")
    for image_id in (1, 2, 3, 4):
        solid_png(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", (50 * image_id, 20, 20))
    recs = list(open_source(root).records())
    assert [r.key.rsplit("/", 1)[1] for r in recs] == ["1", "2", "3", "4"] and [r.split for r in recs] == ["val"] * 4
    qa = {q.question: q for r in recs for q in r.annotation.qa}
    for _, question, qtype, atype, answers, _ in vqa_fixture.QUESTIONS.values():
        assert (qa[question].answers, qa[question].answer_type, qa[question].question_type) == (answers, atype, qtype)
        assert qa[question].type == atype
    assert qa["How many dogs are there?"].answer == "2"  # the multiple_choice_answer
    ingest(open_source(root), out := ProcessedDir(tmp_path / "out"), CFG, workers=1)
    rows = {q["question"]: q for s in read_rows(out, "samples") for q in s["qa"]}
    assert rows["What is on the plate?"]["answers"] == ["pizza"] * 10
    assert rows["What brand is the laptop?"] == {
        "question": "What brand is the laptop?", "answer": "apple", "type": "other",
        "answers": ["apple", "apple", "mac", "dell", "apple", "hp", "sony", "apple computer", "apple!", "macbook"],
        "answer_type": "other", "question_type": "what brand", "question_id": "306"}
    assert len(rows) == len(vqa_fixture.QUESTIONS)


def test_vqa_question_type_must_be_a_string(tmp_path):
    write_json(tmp_path / "v2_a_questions.json", {"questions": [_q(1, 3, "what?"), _q(2, 3, "and?")]})
    write_json(tmp_path / "v2_a_annotations.json", {"annotations": [_a(1, 3, ["x"], question_type="what"),
                                                                     _a(2, 3, ["y"], question_type=7)]})
    recs = list(open_source(tmp_path, "vqa").records())
    assert [r.problem and r.problem.reason for r in recs] == ["malformed", "malformed"]
    assert "question_id 2 has no annotation" in recs[0].problem.message
    assert recs[1].where == "v2_a_annotations.json annotations[1]"


def test_vqa_single_pair_with_any_names_and_file_pointed_at(tmp_path):
    root = tmp_path / "one"
    solid_png(root / "12.png", (10, 20, 30))
    write_json(root / "my_questions.json", {"questions": [_q(1, 12, "what?")]})
    write_json(root / "answers_annotations_v1.json", {"annotations": [_a(1, 12, ["this"])]})
    for source in (open_source(root), open_source(root / "my_questions.json"),
                   open_source(root / "answers_annotations_v1.json", "vqa")):
        assert isinstance(source, VQASource)
        ((rec),) = source.records()
        assert (rec.key, rec.image, rec.split, rec.annotation.qa[0].answer) == ("my_questions/12", "12.png", None,
                                                                                 "this")


@pytest.mark.parametrize("name, text, expected", [
    ("v2_a_annotations.json", '{"annotations": [\n\n {"question_id": 1,]}',
     r"v2_a_annotations\.json is not JSON: .* line 3"),
    ("v2_a_annotations.json", '{"answers": []}',
     r"v2_a_annotations\.json: expected a JSON object with an 'annotations'"),
    ("v2_a_questions.json", '{"qs": []}', r"v2_a_questions\.json: expected a JSON object with a 'questions' list"),
    ("v2_a_annotations.json", json.dumps({"annotations": [_a(2, 3, ["x"]), _a(4, 3, ["y"])]}),
     r"v2_a_annotations\.json answers none of the questions in v2_a_questions\.json: the files do not belong"),
])
def test_vqa_malformed_file_fails_before_any_record(tmp_path, name, text, expected):
    write_json(tmp_path / "v2_a_questions.json", {"questions": [_q(1, 3, "what?")]})
    write_json(tmp_path / "v2_a_annotations.json", {"annotations": [_a(1, 3, ["x"])]})
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        open_source(tmp_path, "vqa")


def test_vqa_bad_entries_orphans_and_disagreements_are_bad_records(tmp_path):
    """An answer to no question, a question of an image that is not there, a repeated or malformed entry: each is
    a rejection where it is in its file, the other records go on."""
    root = tmp_path / "v"
    for image_id in (1, 2, 3):
        solid_png(root / f"COCO_train2014_{image_id:012d}.jpg", (70 * image_id, 9, 9))
    write_json(root / "v2_train2014_questions.json", {"questions": [
        _q(10, 1, "what?"), _q(20, 2, "and?"), _q(30, 3, "which?"), _q(40, 4, "no image?"), _q(10, 1, "again?"),
        {"question_id": 50, "question": "no image id"}]})
    write_json(root / "v2_train2014_annotations.json", {"annotations": [
        _a(10, 1, ["a"]), _a(20, 2, ["b"]), _a(30, 9, ["c"]), _a(40, 4, ["d"]), _a(99, 5, ["orphan"]),
        _a(20, 2, ["again"]), {"question_id": 60}]})
    recs = list(open_source(root).records())
    got = [(r.number, r.key.split("/", 1)[1], r.where, r.problem and r.problem.reason) for r in recs]
    q, a = "v2_train2014_questions.json", "v2_train2014_annotations.json"
    assert got == [
        (1, "1", f"{q} image 1", None), (2, "2", f"{q} image 2", None), (3, "3", f"{q} image 3", "malformed"),
        (4, "4", f"{q} image 4", "missing_file"),
        (5, "questions[4]", f"{q} questions[4]", "duplicate"), (6, "questions[5]", f"{q} questions[5]", "malformed"),
        (7, "annotations[4]", f"{a} annotations[4]", "orphan"),
        (8, "annotations[5]", f"{a} annotations[5]", "duplicate"),
        (9, "annotations[6]", f"{a} annotations[6]", "malformed")]
    assert recs[2].problem.message == (f"{q} image 3: {a} annotations[2] for question_id 30 has image_id 9, but "
                                       f"{q} questions[2] has 3")
    assert recs[6].problem.message == (f"{a} annotations[4] has question_id 99 (image_id 5), which is not a question "
                                       f"in {q}")
    assert [r.split for r in recs] == ["train"] * 9
    report = ingest(open_source(root), ProcessedDir(tmp_path / "out"), CFG)
    assert (report.records_in, report.accepted, report.rejected) == (9, 2, 7)


def test_vqa_unpairable_files_fail(tmp_path):
    write_json(tmp_path / "x_train_questions.json", {"questions": []})
    write_json(tmp_path / "x_val_annotations.json", {"annotations": []})
    write_json(tmp_path / "x_test_annotations.json", {"annotations": []})
    with pytest.raises(SourceError, match=r"cannot pair .*x_train_questions\.json"):
        open_source(tmp_path, "vqa")


# --- easy-VQA ----------------------------------------------------------------------------------------


@pytest.fixture()
def easy(tmp_path: Path) -> Path:
    """train: ids 0, 1, 2 (no questions), 3 (no png), 10; test: ids 0, 1."""
    root = tmp_path / "easy"
    for i in (0, 1, 2, 10):
        solid_png(root / "train" / "images" / f"{i}.png", (20 * i, 200, 90))
    for i in (0, 1):
        solid_png(root / "test" / "images" / f"{i}.png", (200, 20 * i, 90))
    write_json(root / "train" / "questions.json", [
        ["what is the blue shape?", "circle", 0], ["what color is the shape?", "blue", 0],
        ["is there a red shape?", "no", 1], ["what shape is in the image?", "triangle", 10],
        ["does the image contain a circle?", "Yes", 3], ["what is the colour of the triangle?", "red", 10]])
    write_json(root / "test" / "questions.json", [["is there not a gray shape?", "yes", 1], ["what?", "x", 0]])
    return root


def test_easy_vqa_records(easy):
    source = open_source(easy)
    assert isinstance(source, EasyVQASource) and isinstance(open_source(easy, "easy-vqa"), EasyVQASource)
    assert source.annotation_files() == ["train/questions.json", "test/questions.json"]
    recs = list(source.records())
    assert [r.key for r in recs] == ["train/0", "train/1", "train/2", "train/3", "train/10", "test/0", "test/1"]
    assert [r.number for r in recs] == list(range(1, 8))
    assert [r.split for r in recs] == ["train"] * 5 + ["test"] * 2
    assert recs[0].image == "train/images/0.png" and recs[0].where == "train/questions.json image 0"
    assert [(q.answer, q.type) for q in recs[0].annotation.qa] == [("circle", "shape"), ("blue", "color")]
    assert [(q.answer, q.type) for q in recs[4].annotation.qa] == [("triangle", "shape"), ("red", "color")]
    assert recs[2].annotation is None and recs[2].problem.reason == "no_text"
    assert recs[3].image == "train/images/3.png"  # no such file: the engine reports it


def test_easy_vqa_ingest(easy, tmp_path):
    out = ProcessedDir(tmp_path / "out")
    report = ingest(open_source(easy), out, CFG, workers=1)
    assert report.records_in == 7 == report.accepted + report.rejected
    assert (report.accepted, report.rejected) == (5, 2)
    assert {r["sample_id"]: r["reason"] for r in read_rows(out, "rejects")} == {
        "train/2": "no_text", "train/3": "missing_file"}
    samples = {s["sample_id"]: s for s in read_rows(out, "samples")}
    assert samples["test/1"]["split"] == "test" == samples["test/0"]["split"]
    assert samples["test/1"]["qa"] == [{"question": "is there not a gray shape?", "answer": "yes", "type": "yes/no",
                                        "answers": [], "answer_type": None, "question_type": None, "question_id": None}]
    assert samples["test/0"]["qa"][0]["type"] == "other"
    given_train = ("train/0", "train/1", "train/10")  # cut into train and val by image digest
    assert [samples[k]["split"] for k in given_train] == ["train", "train", "train"]
    assert [assign_split(samples[k]["image_sha256"], CFG.split, "train") for k in given_train] == ["train"] * 3
    assert sum(len(s["qa"]) for s in samples.values()) == 7  # train/3's question went with its rejected record


def test_easy_vqa_single_split_folder_and_file(easy):
    for source in (open_source(easy / "test"), open_source(easy / "test" / "questions.json")):
        assert isinstance(source, EasyVQASource)
        recs = list(source.records())
        assert [(r.key, r.image, r.split) for r in recs] == [("test/0", "images/0.png", "test"),
                                                             ("test/1", "images/1.png", "test")]


@pytest.mark.parametrize("question, answer, expected", [
    ("is there a blue shape?", "no", "yes/no"), ("does the image contain a circle?", "yes", "yes/no"),
    ("what color is the shape?", "red", "color"), ("what is the colour of the circle?", "red", "color"),
    ("what is the green shape?", "circle", "shape"), ("what shape does the image contain?", "circle", "shape"),
    ("how big is it?", "small", "other"),
])
def test_easy_qa_type(question, answer, expected):
    assert easy_qa_type(question, answer) == expected


@pytest.mark.parametrize("text, expected", [
    ('[["a", "b", 0],\n ["c", "d" 1]]', r"train[/\\]questions\.json is not JSON: .* line 2 column"),
    ('{"questions": []}', r"train[/\\]questions\.json: expected a JSON list"),
])
def test_easy_vqa_malformed_file_fails_before_any_record(easy, text, expected):
    (easy / "train" / "questions.json").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=expected):
        open_source(easy, "easy-vqa")


def test_easy_vqa_bad_items_are_bad_records(easy):
    (easy / "test" / "questions.json").write_text(
        '[["is it?", "yes", 1], ["c", "d"], ["a", "b", "7"], ["what?", "x", 0]]', encoding="utf-8")
    recs = list(open_source(easy / "test").records())
    assert [(r.key, r.where, r.problem and r.problem.reason) for r in recs] == [
        ("test/0", "questions.json image 0", None), ("test/1", "questions.json image 1", None),
        ("test/item 1", "questions.json item 1", "malformed"), ("test/item 2", "questions.json item 2", "malformed")]
    assert recs[3].problem.message.startswith("questions.json item 2 must be [question: string, answer: string, "
                                              "image_id: integer >= 0], got [\"a\", \"b\", \"7\"]")


def test_easy_vqa_not_detected_for_other_questions_json(tmp_path):
    write_json(tmp_path / "questions.json", {"questions": [_q(1, 1, "what?")]})
    assert not EasyVQASource.detect(Storage(tmp_path), ["questions.json"])
