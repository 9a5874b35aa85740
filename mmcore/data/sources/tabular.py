"""Tabular sources: CSV/TSV rows of image,caption[,lang], and Parquet tables of images and captions."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.data import records as R
from mmcore.data.sources.base import IMAGE_EXTENSIONS, Source, SourceError, iter_lines
from mmcore.data.storage import Storage

CSV_EXTENSIONS = (".csv", ".tsv")
IMAGE_COLUMNS = ("image", "image_path", "path", "file_name")  # the first one present is used
CAPTION_COLUMNS = ("caption", "text")
MAX_ROW_LINES = 20  # a quoted field still open after this many lines is an unterminated quote
# csv refuses fields over 131,072 characters by default: a caption that long would lose its row (and its image
# path) as `malformed`; read it, and the text-length rule rejects it as `text_too_long` with its image path
FIELD_LIMIT = 2**31 - 1


def _lift_field_limit() -> None:
    """The csv module's field limit is one per process: raised, never lowered."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)


class CsvSource(Source):
    format = "csv"
    description = "one .csv/.tsv file of image,caption[,lang] rows (header optional)"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        if file is None:
            found = [f for f in storage.files(recursive=False) if f.lower().endswith(CSV_EXTENSIONS)]
            if len(found) != 1:
                what = f"{len(found)} CSV/TSV files ({', '.join(found)})" if found else "no .csv or .tsv file"
                raise SourceError(f"{storage.describe('')} has {what}: expected exactly one; name the file to read")
            file = found[0]
        if not storage.is_file(file):
            raise SourceError(f"{storage.describe(file)} does not exist: expected a CSV/TSV file")
        self.path = file
        self.delimiter = "\t" if file.lower().endswith(".tsv") else ","
        self.header_line = 0  # line number of the header row; 0: no header
        self.index = (0, 1, 2)  # positions of image, caption and (optional) lang
        self.width: int | None = None  # fields per row when a header says; None: 2 or 3
        self._read_header()

    def _read_header(self) -> None:
        """Looks at the first row: a header maps columns by name; otherwise they are positional."""
        with closing(iter_lines(self.storage, self.path)) as lines:
            line, raw = next(((n, r) for n, r in lines if r.strip()), (0, b""))
        if not line:
            raise SourceError(f"{self.storage.describe(self.path)} is empty: expected image,caption[,lang] rows")
        text = R.decode_text(raw, self.path)
        if isinstance(text, R.Problem):
            return  # not a header (headers are plain names); records() reports the line
        _lift_field_limit()
        try:
            row = next(csv.reader([text], delimiter=self.delimiter, strict=True))
        except csv.Error:
            return  # e.g. a quoted caption spanning lines: data, reported by records()
        names = [name.strip().lower() for name in row]
        known = set(IMAGE_COLUMNS) | set(CAPTION_COLUMNS) | {"lang", "captions"}
        # a header is a row of names: it names a known column and holds no image path
        if names[0] == "image" or (known & set(names) and not any(n.endswith(IMAGE_EXTENSIONS) for n in names)):
            image = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
            caption = next((names.index(c) for c in CAPTION_COLUMNS if c in names), None)
            if image is None or caption is None:
                missing = "image" if image is None else "caption"
                raise SourceError(f"{self.storage.describe(self.path)} line {line}: the header ({', '.join(row)}) "
                                  f"has no {missing} column; expected columns {' / '.join(IMAGE_COLUMNS)}, "
                                  f"{' / '.join(CAPTION_COLUMNS)} and optionally lang")
            self.header_line, self.width = line, len(names)
            self.index = (image, caption, names.index("lang") if "lang" in names else None)
        elif len(row) < 2:
            raise SourceError(f"{self.storage.describe(self.path)} line {line}: found 1 field, expected "
                              f"image,caption[,lang] separated by {self.delimiter!r} (or a header naming the columns)")

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        return any(f.lower().endswith(CSV_EXTENSIONS) for f in files)

    def annotation_files(self) -> list[str]:
        return [self.path]

    def records(self) -> Iterator[R.SourceRecord]:
        for number, (key, where, ann, problem) in enumerate(self._items(), 1):
            yield R.SourceRecord(number, key, where, ann, problem=problem)

    def _items(self) -> Iterator[tuple[str, str, R.Annotation | None, R.Problem | None]]:
        """(key, where, annotation, problem) per record: consecutive rows of one image are one record."""
        group: tuple[str, int, list] | None = None  # image, first line, [(caption, lang)]
        held: list[tuple] = []  # bad rows met inside a group: they follow it, so the group stays whole
        for line, row in self._rows():
            fields = row if isinstance(row, R.Problem) else self._fields(line, row)
            if isinstance(fields, R.Problem):
                bad = (f"{self.path}:line {line}", f"{self.path} line {line}", None, fields)
                if group:
                    held.append(bad)
                else:
                    yield bad
                continue
            image, caption, lang = fields
            if group and group[0] != image:
                yield self._group(*group)
                yield from held
                group, held = None, []
            group = group or (image, line, [])
            group[2].append((caption, lang))
        if group:
            yield self._group(*group)
        yield from held

    def _group(self, image: str, line: int, captions: list) -> tuple:
        return image, f"{self.path} line {line}", R.Annotation(image=image, captions=R.by_lang(captions)), None

    def _fields(self, line: int, row: list[str]) -> tuple[str, str, str | None] | R.Problem:
        image_at, caption_at, lang_at = self.index
        if (len(row) != self.width) if self.width else (len(row) not in (2, 3)):
            expected = f"{self.width} (as the header)" if self.width else "2 or 3 (image,caption[,lang])"
            return R.Problem(R.MALFORMED, f"{self.path} line {line}: {len(row)} fields, expected {expected}")
        image = row[image_at].strip()
        if not image:
            return R.Problem(R.MALFORMED, f"{self.path} line {line}: the image field is empty")
        lang = row[lang_at].strip() if lang_at is not None and lang_at < len(row) else ""
        return image, row[caption_at], lang or None

    def _rows(self) -> Iterator[tuple[int, list[str] | R.Problem]]:
        """(first line, fields or the problem) per non-blank row after the header, each line decoded alone.

        A quoted field may span lines, so an unfinished row takes the next lines until it parses.
        """
        lines: list[str] = []
        start = 0
        _lift_field_limit()
        for number, raw in iter_lines(self.storage, self.path):
            if number <= self.header_line or (not lines and not raw.strip()):
                continue
            text = R.decode_text(raw, f"{self.path} line {number}")
            if isinstance(text, R.Problem):
                yield (start if lines else number), text
                lines = []
                continue
            start = start if lines else number
            lines.append(text + "\n")
            try:
                row = next(csv.reader(lines, delimiter=self.delimiter, strict=True))
            except csv.Error as exc:
                unclosed = "unexpected end of data" in str(exc)  # the csv module's words for an open quote
                if unclosed and len(lines) < MAX_ROW_LINES:
                    continue
                message = f"a quoted field is not closed by line {number}" if unclosed else str(exc)
                row = R.Problem(R.MALFORMED, f"{self.path} line {start}: {message}")
            lines = []
            yield start, row
        if lines:
            yield start, R.Problem(R.MALFORMED, f"{self.path} line {start}: a quoted field is not closed")


class ParquetSource(Source):
    format = "parquet"
    description = "Parquet tables with an image (bytes, {bytes, path} or path) column and caption/text/captions"

    def __init__(self, storage: Storage, file: str | None = None, text_required: bool = True):
        super().__init__(storage, file)
        # False (batch inference): an image column alone will do, and a question needs no answer
        self.text_required = text_required
        self.paths = [file] if file else [f for f in storage.files() if f.lower().endswith(".parquet")]
        if not self.paths:
            raise SourceError(f"{storage.describe('')} has no .parquet files")
        self.plans = {rel: self._plan(rel) for rel in self.paths}  # checks every schema before any record

    def _open(self, rel: str) -> Any:
        if not self.storage.is_file(rel):
            raise SourceError(f"{self.storage.describe(rel)} does not exist: expected a Parquet file")
        return self.storage.open_file(rel)  # random access: Parquet reads its footer first

    def _plan(self, rel: str) -> dict[str, Any]:
        """Which columns hold what, checked against the accepted names and types."""
        where = self.storage.describe(rel)
        try:
            with self._open(rel) as fh:
                schema = pq.ParquetFile(fh).schema_arrow
        except pa.ArrowInvalid as exc:  # (a storage error propagates as it is)
            raise SourceError(f"{where} is not a Parquet file: {exc}") from None
        types = {f.name: f.type for f in schema}
        image = next((c for c in IMAGE_COLUMNS if c in types), None)
        text = next((c for c in (*CAPTION_COLUMNS, "captions") if c in types), None)
        qa = "question" in types and ("answer" in types or not self.text_required)
        if image is None or (text is None and not qa and self.text_required):
            missing = "image" if image is None else "text"
            raise SourceError(
                f"{where}: no {missing} column; columns found: {', '.join(types) or 'none'}. Expected an image "
                f"column ({' / '.join(IMAGE_COLUMNS)}: image bytes, a struct of bytes and/or path, or a path "
                f"string relative to {self.storage.uri}) and a text column (caption / text: string, captions: "
                f"list of strings, or question + answer)")
        kind = _image_kind(types[image])
        if kind is None:
            raise SourceError(f"{where}: column {image!r} has type {types[image]}; expected binary, string, "
                              f"or a struct with a bytes (binary) and/or path (string) field")
        optional = [c for c in ("lang", "id") if c in types] + [c for c in ("question", "answer") if qa and c in types]
        for column in [text, *optional]:
            t = types.get(column)
            if column == "captions" and (pa.types.is_list(t) or pa.types.is_large_list(t)):
                t = t.value_type
            if column not in (None, "id") and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                expected = "a list of strings" if column == "captions" else "string"
                raise SourceError(f"{where}: column {column!r} has type {types[column]}; expected {expected}")
        return {"image": image, "kind": kind, "text": text, "qa": qa,
                "columns": [image] + ([text] if text else []) + optional}

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        return any(f.lower().endswith(".parquet") for f in files)

    def annotation_files(self) -> list[str]:
        return list(self.paths)

    def records(self) -> Iterator[R.SourceRecord]:
        number = 0
        for rel in self.paths:
            plan, row = self.plans[rel], 0
            try:
                with self._open(rel) as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(batch_size=256, columns=plan["columns"]):
                        for values in batch.to_pylist():
                            number, row = number + 1, row + 1
                            yield self._record(number, rel, row, values, plan)
            except pa.ArrowException as exc:  # a data page that does not decode: the rest of the file is lost
                if isinstance(exc, OSError) and not self.storage.local:
                    raise  # an object store that did not answer: retried, not a record
                number += 1
                problem = R.Problem(R.MALFORMED, f"{rel} is corrupt after row {row}: {type(exc).__name__}: {exc}")
                yield R.SourceRecord(number, f"{rel}#error", f"{rel} after row {row}", None, problem=problem)

    def _record(self, number: int, rel: str, row: int, values: dict, plan: dict) -> R.SourceRecord:
        key = str(values["id"]) if values.get("id") is not None else f"{rel}#{row}"  # row: 1-based
        where = f"{rel} row {row}"
        image = values[plan["image"]]
        data, path = {"bytes": (image, None), "path": (None, image)}.get(plan["kind"], (None, None))
        if plan["kind"] == "struct" and image is not None:
            data, path = image.get("bytes"), image.get("path")
        if data is None and not path:
            problem = R.Problem(R.MISSING_FILE, f"{where}: column {plan['image']!r} holds no image")
            return R.SourceRecord(number, key, where, None, problem=problem)
        texts = values.get(plan["text"]) if plan["text"] else None
        texts = [t for t in (texts if isinstance(texts, list) else [texts]) if t is not None]
        question, answer = values.get("question"), values.get("answer")
        if answer is None and question is not None and not self.text_required:
            answer = ""  # a question to answer (batch inference), not a training example
        if (question is None) != (answer is None):
            problem = R.Problem(R.MALFORMED, f"{where}: a question without an answer, or an answer without one")
            return R.SourceRecord(number, key, where, None, problem=problem)
        qa = [R.QA(question=question, answer=answer)] if question is not None else []
        ann = R.Annotation(image=path or key, captions=R.by_lang((t, values.get("lang")) for t in texts), qa=qa)
        problem = None if texts or qa else R.Problem(R.NO_TEXT, f"{where}: column {plan['text']!r} is empty")
        return R.SourceRecord(number, key, where, ann, image_bytes=data, problem=problem)


def _image_kind(t: pa.DataType) -> str | None:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "path"
    if pa.types.is_struct(t):
        fields = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
        right = {"bytes": _image_kind(fields.get("bytes", pa.binary())) == "bytes",
                 "path": _image_kind(fields.get("path", pa.string())) == "path"}
        if {"bytes", "path"} & set(fields) and all(right.values()):
            return "struct"
    return None
