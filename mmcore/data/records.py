"""The canonical sample record, how annotation lines are read into it, and the rejection reasons.

Canonical layout of a dataset (the same for bundled and user data):

    <root>/annotations.jsonl   one JSON object per image, e.g.
        {"id": "000123", "image": "images/000123.png",
         "captions": {"en": ["a red circle"], "zh": ["一个红色圆形"]},
         "qa": [{"question": "what color is the circle?", "answer": "red", "type": "color"}],
         "meta": {...}}
    <root>/images/...          image files, referenced relative to <root>
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ANNOTATIONS = "annotations.jsonl"

# Rejection reason codes; every rejected record carries one plus a human-readable message.
MALFORMED = "malformed"  # not JSON, or not the canonical schema
MISSING_FILE = "missing_file"
OUTSIDE_ROOT = "outside_root"
UNDECODABLE = "undecodable"
TOO_SMALL = "too_small"
TOO_LARGE = "too_large"
BAD_ASPECT = "bad_aspect"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
NO_TEXT = "no_text"
REASONS = (MALFORMED, MISSING_FILE, OUTSIDE_ROOT, UNDECODABLE, TOO_SMALL, TOO_LARGE, BAD_ASPECT,
           EMPTY_TEXT, TEXT_TOO_LONG, NO_TEXT)


class QA(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str
    type: str = "other"


class Annotation(BaseModel):
    """One line of annotations.jsonl."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    image: str
    captions: dict[str, list[str]] = Field(default_factory=dict)
    qa: list[QA] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def sample_id(self) -> str:
        return self.id if self.id is not None else self.image


@dataclass(frozen=True)
class Line:
    """A raw annotation line and its 1-based position in the file."""

    number: int
    raw: bytes


@dataclass(frozen=True)
class Rejection:
    record: int
    sample_id: str | None
    image: str | None
    reason: str
    message: str


def parse_line(line: Line) -> Annotation | Rejection:
    """Parses one annotation line; a bad line is a rejection, never an exception."""
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(line.number, None, None, MALFORMED, f"line {line.number} is not UTF-8: {exc.reason}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejection(line.number, None, None, MALFORMED, f"line {line.number} is not JSON: {exc.msg}")
    try:
        return Annotation.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        sid = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
        img = data.get("image") if isinstance(data, dict) and isinstance(data.get("image"), str) else None
        return Rejection(line.number, sid, img, MALFORMED, f"line {line.number}: {where}: {first['msg']}")


def check_text(ann: Annotation, max_chars: int) -> Rejection | None:
    """Empty, over-long or absent text is a rejection; returns None when the text is usable."""
    texts = [(f"captions.{lang}[{i}]", t) for lang, caps in ann.captions.items() for i, t in enumerate(caps)]
    texts += [(f"qa[{i}].{k}", getattr(qa, k)) for i, qa in enumerate(ann.qa) for k in ("question", "answer")]
    if not texts:
        return Rejection(0, ann.sample_id, ann.image, NO_TEXT, "record has no captions and no questions")
    for where, text in texts:
        if not text.strip():
            return Rejection(0, ann.sample_id, ann.image, EMPTY_TEXT, f"{where} is empty")
        if len(text) > max_chars:
            return Rejection(0, ann.sample_id, ann.image, TEXT_TOO_LONG,
                             f"{where} has {len(text)} characters, limit {max_chars}")
    return None


def iter_lines(path: str, start: int = 0, count: int | None = None, first_number: int = 1) -> Iterator[Line]:
    """Streams non-blank lines from byte offset `start`, numbering them from `first_number`."""
    with open(path, "rb") as fh:
        fh.seek(start)
        number = first_number
        for raw in fh:
            if count is not None and number - first_number >= count:
                return
            raw = raw.strip()
            if raw:
                yield Line(number, raw)
            number += 1
