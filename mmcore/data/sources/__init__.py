"""Source readers: every format a dataset arrives in, read into the one canonical record.

    open_source("data/raw/coco")                  # format detected from the files
    open_source("s3://bucket/flickr", "csv")      # or given
    open_source("data/raw/x/captions.tsv")        # a file picks the annotation file; its folder is the root

| format     | what it reads |
|------------|---------------|
| jsonl      | annotations.jsonl + images (the canonical layout, data/README.md) |
| easy-vqa   | train/ and test/ folders of questions.json ([question, answer, image_id]) + images/<id>.png |
| karpathy   | Karpathy splits JSON (dataset_coco.json): images with filepath/filename, split and sentences |
| vqa        | VQA v2 questions JSON + annotations JSON, images found by the image id in their file names |
| coco       | COCO captions JSON (images + annotations with image_id/caption) |
| webdataset | .tar shards of key.jpg + key.txt / key.json |
| parquet    | Parquet tables with an image-bytes or image-path column and a caption column |
| csv        | CSV/TSV rows of image,caption[,lang] |
| folder     | images with sidecar .txt captions |
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from mmcore.data.sources.base import IMAGE_EXTENSIONS, Source, SourceError
from mmcore.data.storage import Storage
from mmcore.io import is_uri

# Detection order matters: the first reader that recognises the files wins.
READERS: dict[str, str] = {
    "jsonl": "mmcore.data.sources.canonical:CanonicalSource",
    "easy-vqa": "mmcore.data.sources.vqa:EasyVQASource",
    # before vqa and coco: a Karpathy file beside COCO's own files is there to pick the splits
    "karpathy": "mmcore.data.sources.karpathy:KarpathySource",
    "vqa": "mmcore.data.sources.vqa:VQASource",
    "coco": "mmcore.data.sources.coco:CocoSource",
    "webdataset": "mmcore.data.sources.webdataset:WebDatasetSource",
    "parquet": "mmcore.data.sources.tabular:ParquetSource",
    "csv": "mmcore.data.sources.tabular:CsvSource",
    "folder": "mmcore.data.sources.folder:FolderSource",
}
FORMATS = ("auto", *READERS)

__all__ = ["FORMATS", "READERS", "Source", "SourceError", "open_source", "reader"]


def reader(fmt: str) -> type[Source]:
    if fmt not in READERS:
        raise ValueError(f"unknown source format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    module, name = READERS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def _split_file(uri: str) -> tuple[Storage, str | None]:
    """A URI naming a file -> (its folder, the file name); a folder -> (it, None)."""
    storage = Storage(uri)
    if storage.is_dir():
        return storage, None
    if is_uri(uri):
        parent, _, name = uri.rstrip("/").rpartition("/")
    else:
        path = Path(uri).resolve()
        parent, name = str(path.parent), path.name
    folder = Storage(parent)
    if not folder.is_file(name):
        raise SourceError(f"source {uri} does not exist (expected a dataset folder or an annotation file)")
    return folder, name


def open_source(uri: str | Path, fmt: str = "auto", text_required: bool = True) -> Source:
    """Opens a dataset folder or annotation file; the format is detected unless given.

    `text_required=False` reads inputs for batch inference: a folder of images without captions is a
    `folder` source, and a Parquet table needs only its image column (and a question needs no answer).
    Records without text are then yielded with the `no_text` problem, which the caller may ignore.

    Raises SourceError, before any record is read, when the location is missing, the format cannot be
    recognised, or an annotation file is malformed.
    """
    storage, file = _split_file(str(uri))

    def make(name: str) -> Source:
        relaxed = not text_required and name == "parquet"
        return reader(name)(storage, file, text_required=False) if relaxed else reader(name)(storage, file)

    if fmt != "auto":
        reader(fmt)  # an unknown format is named before anything else
        return make(fmt)
    files = [file] if file else storage.files(recursive=False)
    for name in READERS:
        if reader(name).detect(storage, files):
            return make(name)
    if file is None:  # e.g. a folder of sub-folders of images with sidecar captions
        files = storage.files()
        for name in ("webdataset", "parquet", "folder"):
            if reader(name).detect(storage, files):
                return make(name)
    if not text_required and any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
        return make("folder")  # images alone
    expected = "; ".join(f"{name}: {reader(name).description}" for name in READERS)
    raise SourceError(f"cannot tell the format of {storage.describe(file or '')}.{_json_problems(storage, files)} "
                      f"Expected one of: {expected}. Name it with --format if it is one of these.")


def _json_problems(storage: Storage, files: list[str], limit: int = 64 << 20) -> str:
    """Syntax errors of the JSON files present: often why a dataset was not recognised."""
    problems = []
    for rel in files:
        if not rel.lower().endswith(".json"):
            continue
        try:
            with storage.open(rel) as fh:
                data = fh.read(limit + 1)
            if len(data) <= limit:
                json.loads(data)
        except json.JSONDecodeError as exc:
            problems.append(f" {storage.describe(rel)} is not valid JSON ({exc.msg} at line {exc.lineno} column "
                            f"{exc.colno}), which may be why.")
        except (OSError, ValueError, RecursionError):  # not UTF-8, a number over 4300 digits, too deep
            continue
    return "".join(problems[:3])
