"""What every source reader is: a folder (or file) in some format -> a stream of canonical SourceRecords."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from mmcore.data.records import SourceRecord, storable_text
from mmcore.data.storage import Storage

HASH_MAX_FILES = 64  # annotation files are content-hashed up to this many ...
HASH_MAX_BYTES = 256 << 20  # ... and this many bytes in all; beyond, size and modification time are used
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class SourceError(ValueError):
    """An annotation file that cannot be read as its format, raised before any record is processed.

    The message names the file, the line or record, and what was expected there.
    """


class Source(ABC):
    """A dataset in one format under a root (local folder or object-store prefix).

    `file` picks one annotation file when the user points at a file rather than a folder. Constructors
    check the structure of the annotation files, so a malformed file fails before any work starts;
    `records()` then streams the records in a fixed order.
    """

    format: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, storage: Storage, file: str | None = None):
        self.storage = storage
        self.file = file

    @classmethod
    @abstractmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        """True when the files at the root (sorted relative paths) look like this format."""

    @abstractmethod
    def annotation_files(self) -> list[str]:
        """Relative paths of the files that hold the annotations (their digests identify the version)."""

    @abstractmethod
    def records(self) -> Iterator[SourceRecord]:
        """Every record, in a fixed order; a bad record is yielded with a problem, never skipped."""

    def describe(self) -> dict[str, Any]:
        """Format, location and a fingerprint of each annotation file: what the manifest records as lineage.

        Annotation files are hashed when they are few and small (JSONL, CSV, COCO, VQA). Formats whose
        annotation files are the dataset itself (tars, Parquet tables, one caption file per image) get
        "size:mtime" fingerprints instead, from one listing: hashing would read the whole dataset again.
        """
        rels = [rel for rel in self.annotation_files() if storable_text(rel) == rel]
        # a file name that is not UTF-8 cannot be opened here: its records are rejected, its name marks the version
        unnamed = {storable_text(rel): "name:not-utf-8" for rel in self.annotation_files() if rel not in rels}
        infos = self.storage.fs.get_file_info([self.storage.path(rel) for rel in rels]) if rels else []
        if len(rels) <= HASH_MAX_FILES and sum(i.size or 0 for i in infos) <= HASH_MAX_BYTES:
            files = {rel: "sha256:" + storage_sha256(self.storage, rel) for rel in rels}
        else:
            files = {rel: f"size:{i.size}:mtime:{i.mtime_ns}" for rel, i in zip(rels, infos, strict=True)}
        return {"format": self.format, "uri": self.storage.uri, "files": {**files, **unnamed}}


def storage_sha256(storage: Storage, rel: str) -> str:
    """The sha256 of file `rel` under `storage`, read in blocks."""
    digest = hashlib.sha256()
    with storage.open(rel) as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def iter_lines(storage: Storage, rel: str, block: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without the line ending), streamed in blocks of `block` bytes."""
    number, rest = 0, b""
    with storage.open(rel) as fh:
        while data := fh.read(block):
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line.rstrip(b"\r")
    if rest:
        yield number + 1, rest.rstrip(b"\r")
