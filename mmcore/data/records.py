"""The canonical sample record, how annotation lines are read into it, and the rejection reasons.

Canonical layout of a dataset (the same for bundled and user data):

    <root>/annotations.jsonl   one JSON object per image, e.g.
        {"id": "000123", "image": "images/000123.png",
         "captions": {"en": ["a red circle"], "zh": ["一个红色圆形"]},
         "qa": [{"question": "what color is the circle?", "answer": "red", "type": "color"}],
         "meta": {...}}
    <root>/images/...          image files, referenced relative to <root>

A qa item may also hold "answers" (all the human answers, e.g. VQA v2's ten, which the official VQA accuracy
scores against), "answer_type", "question_type" and "question_id".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ANNOTATIONS = "annotations.jsonl"

# Rejection reason codes; every rejected record carries one plus a human-readable message.
MALFORMED = "malformed"  # not JSON, or not the record schema of its format
BAD_ENCODING = "bad_encoding"  # text that is not UTF-8 (or holds NUL bytes, or JSON escapes that are no characters)
MISSING_FILE = "missing_file"
OUTSIDE_ROOT = "outside_root"
BAD_PATH = "bad_path"  # a path no file can have: a NUL byte, a name too long, a symlink loop
UNREADABLE = "unreadable"  # the file is there but cannot be read (permission denied, I/O error)
ORPHAN = "orphan"  # an annotation, question or answer whose image (or question) the source does not list
UNDECODABLE = "undecodable"  # not an image Pillow can open
TRUNCATED = "truncated"  # an image file cut short
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"  # over the side limit, or Pillow's decompression-bomb guard
BAD_ASPECT = "bad_aspect"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
NO_TEXT = "no_text"
DUPLICATE = "duplicate"  # same image bytes, or same record key, as an earlier record
REASONS = (MALFORMED, BAD_ENCODING, MISSING_FILE, OUTSIDE_ROOT, BAD_PATH, UNREADABLE, ORPHAN, UNDECODABLE, TRUNCATED,
           TOO_SMALL, TOO_LARGE, BAD_ASPECT, EMPTY_TEXT, TEXT_TOO_LONG, NO_TEXT, DUPLICATE)
SHOWN_CHARS = 200  # longer values are cut in messages (the rejection row keeps the whole image path)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # "<_io.BytesIO object at 0x7f...>": differs from run to run


class QA(BaseModel):
    """A question with its answer. VQA v2 also keeps all ten human answers, which the official accuracy scores
    against, and its answer and question types; single-answer data leaves `answers` empty (or [answer])."""

    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str  # the majority (VQA v2: multiple-choice) answer, what a single-answer classifier learns
    type: str = "other"  # for per-type accuracy (VQA v2: its answer type)
    answers: list[str] = Field(default_factory=list)  # the human answers, in order
    answer_type: str | None = None  # VQA v2: yes/no, number or other
    question_type: str | None = None  # VQA v2: the question's first words, e.g. "what color is the"
    question_id: str | None = None  # VQA v2: the question's id (as text), which the official results file names


class Annotation(BaseModel):
    """One line of annotations.jsonl."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    image: str
    captions: dict[str, list[str]] = Field(default_factory=dict)
    qa: list[QA] = Field(default_factory=list)
    split: Literal["train", "val", "test"] | None = None  # None: assigned by image content hash
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def sample_id(self) -> str:
        return self.id if self.id is not None else self.image


@dataclass(frozen=True)
class Problem:
    """Why a record is rejected: a reason code from REASONS and a message a person can act on."""

    reason: str
    message: str

    def __post_init__(self) -> None:
        # Rejections are stored and compared byte for byte: no memory addresses, and text UTF-8 can hold
        object.__setattr__(self, "message", storable_text(_ADDRESS.sub("", self.message)))


def storable_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold (lone surrogates from JSON escapes or undecodable file names) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: str) -> str:
    """`value` for a message: quoted, escaped, and cut to SHOWN_CHARS characters."""
    if len(value) <= SHOWN_CHARS:
        return storable_text(repr(value))
    return storable_text(repr(value[:SHOWN_CHARS])) + f"... ({len(value)} characters)"


@dataclass(frozen=True)
class SourceRecord:
    """One record of a source in the canonical form, before its image is read.

    Every source reader yields these in a fixed order; ingest turns each into exactly one accepted
    sample or one rejection.
    """

    number: int  # 1-based position in the source's record order
    key: str  # stable identity within the source; becomes the sample id
    where: str  # where a person finds it, e.g. "annotations.jsonl line 12"
    annotation: Annotation | None  # None when the record could not be read (then `problem` says why)
    image_bytes: bytes | None = None  # the image itself, for sources that embed it (tar, Parquet)
    split: str | None = None  # split given by the source ("train", "val", "test"); None: by content hash
    problem: Problem | None = None

    def __post_init__(self) -> None:
        if self.annotation is None and self.problem is None:
            raise ValueError(f"record {self.where}: a record without an annotation must carry a problem")
        if self.split not in (None, "train", "val", "test"):
            raise ValueError(f"record {self.where}: split {self.split!r} is not one of train, val, test")

    @property
    def image(self) -> str | None:
        return self.annotation.image if self.annotation is not None else None

    def digest(self) -> str:
        """Content digest of the record as read (not of its image file): an edited record gets a new one."""
        body = {
            "key": self.key,
            "annotation": self.annotation.model_dump(mode="json") if self.annotation else None,
            "split": self.split,
            "problem": [self.problem.reason, self.problem.message] if self.problem else None,
            "image_bytes": hashlib.sha256(self.image_bytes).hexdigest() if self.image_bytes is not None else None,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def decode_text(raw: bytes, what: str) -> str | Problem:
    """UTF-8 text (a leading byte-order mark is dropped), or a bad_encoding problem naming `what`.

    NUL bytes are no text either: they are what UTF-16 (or a binary file) looks like read as UTF-8."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Problem(BAD_ENCODING, f"{what} is not UTF-8 text: {exc.reason} at byte {exc.start}")
    if "\x00" in text:
        return Problem(BAD_ENCODING, f"{what} is not UTF-8 text: a NUL byte at byte {raw.index(0)} (UTF-16?)")
    return text


def parse_annotation(data: Any, where: str) -> Annotation | Problem:
    """Validates one canonical record; a bad record is a malformed problem, never an exception."""
    try:
        return Annotation.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        return Problem(MALFORMED, f"{where}: {field}: {first['msg']}")


def parse_json_line(raw: bytes, where: str) -> Annotation | Problem:
    """One line of annotations.jsonl -> Annotation, or the problem with it."""
    text = decode_text(raw, where)
    if isinstance(text, Problem):
        return text
    data = load_json_text(text, where)
    return data if isinstance(data, Problem) else parse_annotation(data, where)


def load_json_text(text: str, where: str, lines: bool = False) -> Any:
    """One JSON value, or a malformed problem: a syntax error (at its column; `lines`: its line and column), but
    also what the parser cannot take (a number of over 4300 digits, nesting deeper than the recursion limit)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if lines else f"column {exc.colno}"
        return Problem(MALFORMED, f"{where} is not JSON: {exc.msg} at {at}")
    except (ValueError, RecursionError) as exc:
        return Problem(MALFORMED, f"{where} is not JSON this reader can take: {type(exc).__name__}: {exc}")


def check_text(ann: Annotation, max_chars: int) -> Problem | None:
    """Empty, over-long or absent text is a problem; returns None when the text is usable."""
    texts = [(f"captions.{lang}[{i}]", t) for lang, caps in ann.captions.items() for i, t in enumerate(caps)]
    texts += [(f"qa[{i}].{k}", getattr(qa, k)) for i, qa in enumerate(ann.qa) for k in ("question", "answer")]
    if not texts:
        return Problem(NO_TEXT, "record has no captions and no questions")
    for where, text in texts:
        if not text.strip():
            return Problem(EMPTY_TEXT, f"{where} is empty")
        if len(text) > max_chars:
            return Problem(TEXT_TOO_LONG, f"{where} has {len(text)} characters, limit {max_chars}")
    return None


def by_lang(texts: Iterable[str | tuple[str, str | None]]) -> dict[str, list[str]]:
    """Captions grouped by language; a text without a language (or with an empty one) gets a guessed one."""
    out: dict[str, list[str]] = {}
    for item in texts:
        text, lang = (item, None) if isinstance(item, str) else item
        out.setdefault(lang or guess_lang(text), []).append(text)
    return out


def guess_lang(text: str) -> str:
    """'zh' when the text contains CJK ideographs, else 'en': for formats that do not say."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text) else "en"


def storable(rec: SourceRecord) -> SourceRecord:
    """`rec` when all of its text can be stored (UTF-8); otherwise its bad_encoding rejection.

    JSON escapes can hold lone surrogates ("\\udc80") and file names undecodable bytes, which no shard, key
    digest or message can hold: such a record is rejected with its key, where and image path escaped.
    """
    try:
        rec.digest()
        rec.where.encode("utf-8")
        return rec
    except UnicodeEncodeError:
        pass
    where = storable_text(rec.where)
    image = f" (image {shown(rec.image)})" if rec.image is not None else ""
    problem = Problem(BAD_ENCODING, f"{where}{image}: holds text that is not valid Unicode (a lone surrogate: a "
                                    f"JSON \\u escape of no character, or a file name that is not UTF-8)")
    return SourceRecord(rec.number, storable_text(rec.key), where, None, split=rec.split, problem=problem)
