"""Visual question answering sources: VQA v2 (questions + annotations JSON) and easy-VQA (questions.json lists)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from mmcore.data import records as R
from mmcore.data.sources.base import IMAGE_EXTENSIONS, Source, SourceError
from mmcore.data.sources.coco import brief, json_candidates, load_json, peek, split_of
from mmcore.data.storage import OutsideRoot, Storage

_TRAILING_INT = re.compile(r"(\d+)$")
_NAME_WORDS = {"question", "questions", "annotation", "annotations"}
# (question id, question, its R.QA fields but the question); fields None: the question has no annotation
Question = tuple[Any, str, dict[str, Any] | None]
Answer = tuple[int, Any, dict[str, Any]]  # (index in 'annotations', image id, R.QA fields but the question)
Bad = tuple[int, str, R.Problem]  # a bad entry of a JSON file: its index, position ("questions[3]") and problem
# a questions file read: image id -> questions, image id -> a disagreement with the answers, bad entries, ids asked
Group = tuple[dict[int, list[Question]], dict[int, str], list[Bad], set[Any]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    return _is_int(value) or isinstance(value, str)


def _name(rel: str) -> str:
    return PurePosixPath(rel).name.lower()


def _tokens(rel: str) -> set[str]:
    """Name tokens that identify the subset: v2_OpenEnded_mscoco_train2014_questions -> {v2, openended, ...}."""
    return {t for t in re.split(r"[^a-z0-9]+", PurePosixPath(rel).stem.lower()) if t and t not in _NAME_WORDS}


def _has(storage: Storage, rel: str, *needles: bytes) -> bool:
    try:
        head, tail, _ = peek(storage, rel, 64 << 10)
    except (OSError, OutsideRoot):
        return False
    return all(n in head + tail for n in needles)


def _pair(questions: str, annotations: list[str], where: Storage) -> str:
    """The annotations file for a questions file: the only one, or the one whose name tokens match best."""
    if len(annotations) == 1:
        return annotations[0]
    qt = _tokens(questions)
    fits = sorted((len(_tokens(a)), a) for a in annotations if _tokens(a) <= qt)
    if not fits or (len(fits) > 1 and fits[-1][0] == fits[-2][0]):
        found = ", ".join(annotations) or "none"
        raise SourceError(f"cannot pair {where.describe(questions)} with one annotations file (found: {found}); "
                          f"name them alike, e.g. v2_OpenEnded_mscoco_train2014_questions.json and "
                          f"v2_mscoco_train2014_annotations.json, or point at one questions file")
    return fits[-1][1]


class VQASource(Source):
    format = "vqa"
    description = "VQA v2 *questions.json + *annotations.json, images named by image id (COCO_train2014_<id>.jpg)"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        names = json_candidates(storage, storage.files(recursive=False))
        questions = [f for f in names if "question" in _name(f)]
        annotations = [f for f in names if "annotation" in _name(f) and f not in questions]
        if file is not None and "question" in _name(file):
            self.pairs = [(file, _pair(file, annotations, storage))]
        elif file is not None and "annotation" in _name(file):
            self.pairs = [(q, file) for q in questions if len(questions) == 1 or _tokens(file) <= _tokens(q)]
        elif file is None:
            self.pairs = [(q, _pair(q, annotations, storage)) for q in questions]
        else:
            self.pairs = []
        if not self.pairs:
            raise SourceError(f"no VQA questions/annotations pair in {storage.describe(file or '')}: expected a "
                              f"*questions.json with 'questions' and a *annotations.json with 'annotations'")
        answers = {a: self._load_annotations(a) for a in sorted({a for _, a in self.pairs})}
        self._groups = [self._load_questions(q, a, answers[a][0]) for q, a in self.pairs]
        self._bad = {a: bad + self._orphans(a, found) for a, (found, bad) in answers.items()}
        self._index: dict[int, list[str]] | None = None

    def _load_annotations(self, rel: str) -> tuple[dict[Any, Answer], list[Bad]]:
        """question id -> (annotation index, image id, answer fields), and the bad entries: malformed, or repeating
        a question id (the first one counts). The fields keep every human answer, in order, and the types."""
        where, doc = self.storage.describe(rel), load_json(self.storage, rel)
        if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
            raise SourceError(f"{where}: expected a JSON object with an 'annotations' list of "
                              f"{{question_id, image_id, answers: [{{answer}}]}}")
        out: dict[Any, Answer] = {}
        bad: list[Bad] = []
        for i, ann in enumerate(doc["annotations"]):
            ok = isinstance(ann, dict) and _is_id(ann.get("question_id")) and _is_int(ann.get("image_id"))
            answers = ann.get("answers") if ok else None
            mca = ann.get("multiple_choice_answer") if ok else None
            ok = ok and isinstance(answers, list) and all(isinstance(x, dict) and isinstance(x.get("answer"), str)
                                                          for x in answers)
            ok = ok and (isinstance(mca, str) or (mca is None and bool(answers)))
            ok = ok and all(isinstance(ann.get(k) or "", str) for k in ("answer_type", "question_type"))
            if not ok:
                bad.append((i, f"annotations[{i}]", R.Problem(R.MALFORMED, (
                    f"{rel} annotations[{i}] must be an object with 'question_id', an integer 'image_id' and "
                    f"'answers' [{{answer: string}}] (non-empty unless 'multiple_choice_answer' is given), got "
                    f"{brief(ann)}"))))
            elif ann["question_id"] in out:
                bad.append((i, f"annotations[{i}]", R.Problem(R.DUPLICATE, (
                    f"{rel} annotations[{i}] repeats question_id {ann['question_id']!r} of "
                    f"annotations[{out[ann['question_id']][0]}], which counts"))))
            else:
                if mca is None:  # the most common answer; ties go to the alphabetically first
                    counts = Counter(x["answer"] for x in answers)
                    mca = min(counts, key=lambda a: (-counts[a], a))
                out[ann["question_id"]] = (i, ann["image_id"], {
                    "answer": mca, "type": ann.get("answer_type") or "other", "answers": [x["answer"] for x in answers],
                    "answer_type": ann.get("answer_type") or None, "question_type": ann.get("question_type") or None,
                    "question_id": str(ann["question_id"])})
        return out, bad

    def _load_questions(self, rel: str, ann_rel: str, answers: dict[Any, Answer]) -> Group:
        """image id -> its questions in file order (images in order of first appearance); image id -> why its
        questions and answers disagree; the bad entries; the question ids asked."""
        where, doc = self.storage.describe(rel), load_json(self.storage, rel)
        if not isinstance(doc, dict) or not isinstance(doc.get("questions"), list):
            raise SourceError(f"{where}: expected a JSON object with a 'questions' list of "
                              f"{{image_id, question, question_id}}")
        images: dict[int, list[Question]] = {}
        conflicts: dict[int, str] = {}
        bad: list[Bad] = []
        seen: dict[Any, int] = {}  # question id -> its index in 'questions'
        for i, q in enumerate(doc["questions"]):
            if not (isinstance(q, dict) and _is_int(q.get("image_id")) and isinstance(q.get("question"), str)
                    and _is_id(q.get("question_id"))):
                bad.append((i, f"questions[{i}]", R.Problem(R.MALFORMED, (
                    f"{rel} questions[{i}] must be an object with an integer 'image_id', a string 'question' and "
                    f"a 'question_id', got {brief(q)}"))))
                continue
            qid, image_id = q["question_id"], q["image_id"]
            if qid in seen:
                bad.append((i, f"questions[{i}]", R.Problem(R.DUPLICATE, (
                    f"{rel} questions[{i}] repeats question_id {qid!r} of questions[{seen[qid]}], which counts"))))
                continue
            seen[qid] = i
            index, ann_image, fields = answers.get(qid, (None, image_id, None))
            if ann_image != image_id:  # the record of the image asked about is rejected
                conflicts.setdefault(image_id, f"{ann_rel} annotations[{index}] for question_id {qid!r} has "
                                               f"image_id {ann_image}, but {rel} questions[{i}] has {image_id}")
            images.setdefault(image_id, []).append((qid, q["question"], fields))
        return images, conflicts, bad, set(seen)

    def _orphans(self, ann_rel: str, answers: dict[Any, Answer]) -> list[Bad]:
        """The annotations of `ann_rel` that answer no question of its questions files. None answering any is no
        set of orphans but a wrong pairing: an error."""
        asked = set().union(*(g[3] for (_, a), g in zip(self.pairs, self._groups, strict=True) if a == ann_rel))
        orphans = [(i, qid, image_id) for qid, (i, image_id, _) in answers.items() if qid not in asked]
        if orphans and len(orphans) == len(answers) and asked:
            questions = ", ".join(q for q, a in self.pairs if a == ann_rel)
            raise SourceError(f"{self.storage.describe(ann_rel)} answers none of the questions in {questions}: the "
                              f"files do not belong together (annotations[{orphans[0][0]}] has question_id "
                              f"{orphans[0][1]!r})")
        return [(i, f"annotations[{i}]", R.Problem(R.ORPHAN, (
            f"{ann_rel} annotations[{i}] has question_id {qid!r} (image_id {image_id}), which is not a question in "
            f"{' or '.join(q for q, a in self.pairs if a == ann_rel)}"))) for i, qid, image_id in orphans]

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        named = [f for f in json_candidates(storage, files) if "question" in _name(f) or "annotation" in _name(f)]
        if not named:
            return False
        folder = json_candidates(storage, storage.files(recursive=False))
        return (any(_has(storage, f, b'"questions"', b'"question_id"') for f in folder if "question" in _name(f))
                and any(_has(storage, f, b'"annotations"', b'"answers"') for f in folder if "annotation" in _name(f)))

    def annotation_files(self) -> list[str]:
        return list(dict.fromkeys(f for pair in self.pairs for f in pair))

    def _find(self, image_id: int, subset: str | None) -> str | None:
        """The image file of an id; among several, one under the subset's folder (train2014/) first."""
        if self._index is None:  # one scan of the root: image id = the trailing number of the file name
            self._index = {}
            for rel in self.storage.files():
                stem, ext = PurePosixPath(rel).stem, PurePosixPath(rel).suffix.lower()
                if ext in IMAGE_EXTENSIONS and (m := _TRAILING_INT.search(stem)):
                    self._index.setdefault(int(m.group(1)), []).append(rel)
        paths = self._index.get(image_id, [])
        preferred = [p for p in paths if subset and subset.lower() in p.lower()]
        return (preferred or paths or [None])[0]

    def records(self) -> Iterator[R.SourceRecord]:
        """Each image with all its questions, per questions file; its bad entries after it; then the bad entries
        of the annotations files (malformed, repeated, orphans)."""
        number = 0
        for (rel, ann_rel), (images, conflicts, bad, _) in zip(self.pairs, self._groups, strict=True):
            for image_id, questions in images.items():
                number += 1
                yield self._record(number, rel, ann_rel, image_id, questions, conflicts.get(image_id))
            for _, position, problem in bad:
                number += 1
                yield bad_record(number, rel, position, problem)
        for ann_rel, bad in self._bad.items():
            for _, position, problem in sorted(bad, key=lambda b: b[0]):
                number += 1
                yield bad_record(number, ann_rel, position, problem)

    def _record(self, number: int, rel: str, ann_rel: str, image_id: int, questions: list[Question],
                conflict: str | None) -> R.SourceRecord:
        stem, (split, subset) = PurePosixPath(rel).stem, split_of(rel)
        key, where = f"{stem}/{image_id}", f"{rel} image {image_id}"
        unanswered = [qid for qid, _, fields in questions if fields is None]
        image = self._find(image_id, subset)
        problem = None
        if conflict:
            problem = R.Problem(R.MALFORMED, f"{where}: {conflict}")
        elif unanswered:
            problem = R.Problem(R.MALFORMED, f"{where}: question_id {', '.join(map(str, unanswered))} "
                                             f"{'has' if len(unanswered) == 1 else 'have'} no annotation in {ann_rel}")
        elif image is None:
            problem = R.Problem(R.MISSING_FILE, f"{where}: no image file for image id {image_id} under "
                                                f"{self.storage.uri} (a name ending in the number, e.g. "
                                                f"COCO_train2014_{image_id:012d}.jpg)")
        if problem is not None:
            return R.SourceRecord(number, key, where, None, split=split, problem=problem)
        qa = [R.QA(question=q, **fields) for _, q, fields in questions]
        return R.SourceRecord(number, key, where, R.Annotation(image=image, qa=qa), split=split)


def bad_record(number: int, rel: str, position: str, problem: R.Problem) -> R.SourceRecord:
    """The rejection of a bad entry of the JSON file `rel` (e.g. at "questions[3]"), where it is in the file."""
    key, where = f"{PurePosixPath(rel).stem}/{position}", f"{rel} {position}"
    return R.SourceRecord(number, key, where, None, split=split_of(rel)[0], problem=problem)


# --- easy-VQA ----------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")
_EASY_HEAD = re.compile(rb'\s*\[\s*\[\s*"(?:[^"\\]|\\.)*"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*\d+\s*\]')
_COLOR = re.compile(r"\bcolou?rs?\b")
_SHAPE = re.compile(r"\bwhat shape\b|\bwhat is the \w+ shape\b")


def easy_qa_type(question: str, answer: str) -> str:
    """easy-VQA has no question types: yes/no from the answer, color or shape from the question's wording."""
    q = question.lower()
    if answer.strip().lower() in ("yes", "no"):
        return "yes/no"
    if _COLOR.search(q):
        return "color"
    return "shape" if _SHAPE.search(q) else "other"


def _looks_easy(storage: Storage, rel: str) -> bool:
    try:
        with storage.open(rel) as fh:
            return _EASY_HEAD.match(fh.read(4096)) is not None
    except (OSError, OutsideRoot):
        return False


def _png_id(rel: str) -> int | str:
    """images/12.png -> 12; a name that is not a plain number stays a name (still a record: never skipped)."""
    stem = PurePosixPath(rel).stem
    return int(stem) if stem.isascii() and stem.isdigit() and str(int(stem)) == stem else stem


def _order(image_id: int | str) -> tuple[bool, int, str]:
    """Numeric ids in numeric order, then any other names."""
    return isinstance(image_id, str), image_id if isinstance(image_id, int) else 0, str(image_id)


class EasyVQASource(Source):
    format = "easy-vqa"
    description = "easy-VQA: train/ and test/ with questions.json ([question, answer, image_id]) + images/<id>.png"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        folder = storage.uri.rstrip("/").rsplit("/", 1)[-1].lower()
        if file is not None:  # a questions file: its folder is one split
            parts = [("", file, folder if folder in SPLITS else None)]
        else:
            parts = [(f"{s}/", f"{s}/questions.json", s) for s in SPLITS if storage.is_file(f"{s}/questions.json")]
            if not parts and storage.is_file("questions.json"):
                parts = [("", "questions.json", folder if folder in SPLITS else None)]
        if not parts:
            raise SourceError(f"no easy-VQA questions in {storage.describe('')}: expected train/questions.json and "
                              f"test/questions.json (or questions.json) with [question, answer, image_id] lists")
        self.parts = [(prefix, rel, split, self._load(rel)) for prefix, rel, split in parts]

    def _load(self, rel: str) -> tuple[dict[int, list[tuple[str, str]]], list[Bad]]:
        """image id -> [(question, answer)] in file order, and the items that are not [question, answer, id]."""
        where, doc = self.storage.describe(rel), load_json(self.storage, rel)
        if not isinstance(doc, list):
            raise SourceError(f"{where}: expected a JSON list of [question, answer, image_id], "
                              f"got {type(doc).__name__}")
        out: dict[int, list[tuple[str, str]]] = {}
        bad: list[Bad] = []
        for i, item in enumerate(doc):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[1], str) and _is_int(item[2]) and item[2] >= 0):
                bad.append((i, f"item {i}", R.Problem(R.MALFORMED, f"{rel} item {i} must be [question: string, "
                                                                   f"answer: string, image_id: integer >= 0], got "
                                                                   f"{brief(item)}")))
                continue
            out.setdefault(item[2], []).append((item[0], item[1]))
        return out, bad

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        nested = [f"{s}/questions.json" for s in SPLITS if storage.is_file(f"{s}/questions.json")]
        top = [f for f in files if PurePosixPath(f).name == "questions.json"]
        return any(_looks_easy(storage, f) for f in nested + top)

    def annotation_files(self) -> list[str]:
        return [rel for _, rel, _, _ in self.parts]

    def records(self) -> Iterator[R.SourceRecord]:
        number = 0
        for prefix, rel, split, (questions, bad) in self.parts:
            # every image with questions and every png in images/: an image without questions is a no_text record
            pngs = {_png_id(p): p for p in self.storage.files(f"{prefix}images", recursive=False)
                    if p.lower().endswith(".png")}
            for image_id in sorted(set(questions) | set(pngs), key=_order):
                number += 1
                key = f"{split}/{image_id}" if split else str(image_id)
                where, image = f"{rel} image {image_id}", pngs.get(image_id, f"{prefix}images/{image_id}.png")
                if image_id not in questions:
                    problem = R.Problem(R.NO_TEXT, f"{image} has no questions in {rel}")
                    yield R.SourceRecord(number, key, where, None, split=split, problem=problem)
                    continue
                qa = [R.QA(question=q, answer=a, type=easy_qa_type(q, a)) for q, a in questions[image_id]]
                yield R.SourceRecord(number, key, where, R.Annotation(image=image, qa=qa), split=split)
            for _, position, problem in bad:  # keyed like the images: by split, then where in the file
                number += 1
                where = f"{rel} {position}"
                yield R.SourceRecord(number, f"{split}/{position}" if split else position, where, None, split=split,
                                     problem=problem)
