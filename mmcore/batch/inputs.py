"""The inputs of a batch run: ingest's source readers with captions optional, a request per image (or per
question, or per query text), and what each one is or why it cannot be used."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mmcore.data import records as R
from mmcore.data.sources import open_source
from mmcore.data.sources.base import Source, SourceError, iter_lines, storage_sha256
from mmcore.data.storage import Storage
from mmcore.io import is_uri

TASKS = ("caption", "ask", "embed", "search")
IMAGE_TASKS = ("caption", "ask", "embed")
NO_QUESTION = "no_question"  # an ask input with no question of its own and none given for all
_IGNORED = (R.NO_TEXT, R.EMPTY_TEXT)  # captions are what a source may lack for inference: not a problem here


@dataclass(frozen=True)
class Request:
    """One input: an image (inline bytes, or a path under `root`) with an optional question, or a query text.
    `problem` is set when the source could not give a usable input; the row is then a rejection."""

    id: str
    where: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    question: str | None = None
    text: str | None = None
    problem: R.Problem | None = None
    record_digest: str = ""


@dataclass(frozen=True)
class Requests:
    """The inputs of one batch run: where they come from (`describe`: format, uri, annotation digests) and
    the stream of them."""

    root: str  # the storage root image paths are relative to
    describe: dict[str, Any]
    items: Iterable[Request]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; batch inference does {', '.join(TASKS)}")
    return task


def read_requests(uri: str | Path, task: str, fmt: str = "auto", question: str | None = None) -> Requests:
    """The inputs of `task` at `uri` (a folder, a file or an s3:// prefix), read lazily in a fixed order.

    caption / embed: one request per image. ask: one per question of each record (VQA, Parquet `question`
    column), or, with `question`, one per image asking it. search: one per query text.
    Raises SourceError (a ValueError) naming the location when it cannot be read as any format.
    """
    check_task(task)
    if question is not None and task != "ask":
        raise ValueError(f"--question is for the ask task; task {task!r} takes none")
    if question is not None and not question.strip():
        raise ValueError("--question is empty; give the question to ask about every image")
    if task == "search":
        return _queries(str(uri), fmt)
    storage = Storage(str(uri) if is_uri(str(uri)) else str(Path(uri).resolve()))
    if storage.is_dir() and not storage.files():  # a drop folder with nothing in it yet
        return Requests(storage.uri, {"format": "empty", "uri": storage.uri, "files": {}}, ())
    source = open_source(uri, fmt, text_required=False)
    return Requests(source.storage.uri, source.describe(), _image_requests(source, task, question))


def _image_requests(source: Source, task: str, question: str | None) -> Iterator[Request]:
    for rec in source.records():
        digest = rec.digest()
        if rec.annotation is None or (rec.problem is not None and rec.problem.reason not in _IGNORED):
            yield Request(rec.key, rec.where, rec.image, problem=rec.problem, record_digest=digest)
            continue
        base = {"where": rec.where, "image_path": rec.image, "image_bytes": rec.image_bytes, "record_digest": digest}
        if task != "ask":
            yield Request(rec.key, **base)
        elif question is not None:
            yield Request(rec.key, question=question, **base)
        elif not rec.annotation.qa:
            yield Request(rec.key, **base, problem=R.Problem(
                NO_QUESTION, f"{rec.where} has no question; give one to ask about every image (--question)"))
        else:
            many = len(rec.annotation.qa) > 1
            for i, qa in enumerate(rec.annotation.qa):
                key = qa.question_id or (f"{rec.key}#q{i}" if many else rec.key)
                yield Request(key, question=qa.question, **base)


def _queries(uri: str, fmt: str) -> Requests:
    """Search queries: a .txt file (one per non-blank line), a Parquet table's `text` column, or the captions
    of any source ingest reads."""
    if not is_uri(uri):
        uri = str(Path(uri).resolve())
    parent, _, name = uri.rstrip("/").rpartition("/")
    if name.lower().endswith(".txt") and fmt in ("auto", "txt"):
        storage = Storage(parent)
        if not storage.is_file(name):
            raise SourceError(f"{storage.describe(name)} does not exist: expected a text file of queries")
        describe = {"format": "txt", "uri": uri, "files": {name: "sha256:" + storage_sha256(storage, name)}}
        return Requests(parent, describe, _text_lines(storage, name))
    if name.lower().endswith(".parquet") and fmt in ("auto", "parquet"):
        storage = Storage(parent)
        if not storage.is_file(name):
            raise SourceError(f"{storage.describe(name)} does not exist: expected a Parquet file of queries")
        with storage.open_file(name) as fh:
            columns = pq.ParquetFile(fh).schema_arrow.names
        if "text" in columns and not any(c in columns for c in ("image", "image_path", "path", "file_name")):
            describe = {"format": "parquet", "uri": uri, "files": {name: "sha256:" + storage_sha256(storage, name)}}
            return Requests(parent, describe, _text_column(storage, name, "id" in columns))
    source = open_source(uri, fmt)
    return Requests(source.storage.uri, source.describe(), _caption_queries(source))


def _text_lines(storage: Storage, name: str) -> Iterator[Request]:
    for number, raw in iter_lines(storage, name):
        where = f"{name} line {number}"
        text = R.decode_text(raw, where)
        if isinstance(text, R.Problem):
            yield Request(f"{name}#{number}", where, problem=text, record_digest=hashlib.sha256(raw).hexdigest())
        elif text.strip():
            yield Request(f"{name}#{number}", where, text=text.strip(), record_digest=_digest(text))


def _text_column(storage: Storage, name: str, has_id: bool) -> Iterator[Request]:
    row = 0
    with storage.open_file(name) as fh:
        for batch in pq.ParquetFile(fh).iter_batches(256, columns=["text", "id"] if has_id else ["text"]):
            for values in batch.to_pylist():
                row += 1
                key = str(values["id"]) if has_id and values.get("id") is not None else f"{name}#{row}"
                text, where = values["text"], f"{name} row {row}"
                if text is None or not str(text).strip():
                    yield Request(key, where, problem=R.Problem(R.EMPTY_TEXT, f"{where}: the text is empty"))
                else:
                    yield Request(key, where, text=str(text).strip(), record_digest=_digest(str(text)))


def _caption_queries(source: Source) -> Iterator[Request]:
    for rec in source.records():
        if rec.annotation is None or rec.problem is not None:
            yield Request(rec.key, rec.where, rec.image, problem=rec.problem, record_digest=rec.digest())
            continue
        texts = [t for caps in rec.annotation.captions.values() for t in caps]
        for i, text in enumerate(texts):
            yield Request(f"{rec.key}#c{i}", rec.where, rec.image, text=text, record_digest=_digest(text))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()

