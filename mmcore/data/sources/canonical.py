"""The canonical layout: `annotations.jsonl` (one JSON object per image) + the images it references."""

from __future__ import annotations

import json
from collections.abc import Iterator

from mmcore.data import records as R
from mmcore.data.sources.base import Source, SourceError, iter_lines
from mmcore.data.storage import Storage


class CanonicalSource(Source):
    format = "jsonl"
    description = "annotations.jsonl + images (data/README.md)"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        self.path = file or R.ANNOTATIONS
        if not storage.is_file(self.path):
            raise SourceError(f"{storage.describe(self.path)} does not exist: expected one JSON object per line "
                              f"with an 'image' path and 'captions' and/or 'qa' (data/README.md)")
        self._check_first_record()

    def _check_first_record(self) -> None:
        """A file whose first record is not a JSON object is not this format at all: fail before any work.

        Later bad lines are rejected one by one; a wholly wrong file (a JSON array, a CSV) is an error.
        """
        for line_no, raw in iter_lines(self.storage, self.path):
            if not raw.strip():
                continue
            parsed = R.parse_json_line(raw.strip(), f"{self.storage.describe(self.path)} line {line_no}")
            if isinstance(parsed, R.Problem) and not raw.lstrip().startswith(b"{"):
                raise SourceError(f"{parsed.message}: expected one JSON object per line like "
                                  '{"image": "images/1.png", "captions": {"en": ["..."]}} (data/README.md)')
            return

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        return R.ANNOTATIONS in files

    def annotation_files(self) -> list[str]:
        return [self.path]

    def records(self) -> Iterator[R.SourceRecord]:
        number = 0
        for line_no, raw in iter_lines(self.storage, self.path):
            if not raw.strip():
                continue  # blank lines are layout, not records
            number += 1
            where = f"{self.path} line {line_no}"
            parsed = R.parse_json_line(raw.strip(), where)
            if isinstance(parsed, R.Problem):
                key = _key_hint(raw) or f"{self.path}:{line_no}"
                yield R.SourceRecord(number, key, where, None, problem=parsed)
            else:
                yield R.SourceRecord(number, parsed.sample_id, where, parsed, split=parsed.split)


def _key_hint(raw: bytes) -> str | None:
    """The id (or image) of a record that failed validation, so its rejection names it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # (ValueError: also a number of over 4300 digits)
        return None
    if isinstance(data, dict):
        for field in ("id", "image"):
            if isinstance(data.get(field), str):
                return data[field]
    return None
