"""COCO captions JSON: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}` + images."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

from mmcore.data import records as R
from mmcore.data.sources.base import Source, SourceError
from mmcore.data.storage import Storage

ANNOTATION_DIR = "annotations"  # where COCO keeps its JSON files; the top level is searched too
SMALL = 1 << 20  # JSON files up to this size are parsed to detect them; larger ones are peeked at
DETECT_MAX = 32  # more JSON files than this: per-image sidecars, not COCO's few annotation files
_SPLIT_RE = re.compile(r"(?:^|[^a-z])((train|val|test)[a-z]*\d*)", re.IGNORECASE)
Bad = tuple[str, R.Problem]  # a bad entry of an annotation file: its position ("annotations[3]") and problem


def load_json(storage: Storage, rel: str) -> Any:
    """A whole JSON document; SourceError naming the file, line and column when it is not JSON."""
    try:
        text = storage.read_bytes(rel).decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise SourceError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{storage.describe(rel)} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    data = R.load_json_text(text, storage.describe(rel), lines=True)
    if isinstance(data, R.Problem):
        raise SourceError(data.message)
    return data


def brief(value: Any, limit: int = 200) -> str:
    """A JSON value for a message, cut to `limit` characters."""
    try:
        return json.dumps(value)[:limit]
    except (ValueError, RecursionError):  # nested deeper than the encoder goes
        return f"a {type(value).__name__} nested too deep to show"


def peek(storage: Storage, rel: str, n: int = 256 << 10) -> tuple[bytes, bytes, int]:
    """(first n bytes, last n bytes, size) of a file, without reading the middle of a large one."""
    path = storage.path(rel)
    size = storage.fs.get_file_info(path).size or 0
    with storage.fs.open_input_file(path) as fh:
        if size <= 2 * n:
            whole = fh.read()
            return whole[:n], whole[-n:], size
        head = fh.read(n)
        fh.seek(size - n)
        return head, fh.read(n), size


def split_of(name: str) -> tuple[str | None, str | None]:
    """(split, subset folder) from a file name: captions_train2017 -> ("train", "train2017")."""
    m = _SPLIT_RE.search(PurePosixPath(name).stem)
    return (m.group(2).lower(), m.group(1)) if m else (None, None)


def json_candidates(storage: Storage, files: list[str]) -> list[str]:
    """JSON files at the top level (`files`) and in annotations/, where COCO-style datasets keep them."""
    found = [f for f in files if f.lower().endswith(".json")]
    if storage.is_dir(ANNOTATION_DIR):
        found += [f for f in storage.files(ANNOTATION_DIR, recursive=False) if f.lower().endswith(".json")]
    return sorted(set(found))


def is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def looks_like(storage: Storage, rel: str, whole: Callable[[Any], bool],
               ends: Callable[[bytes, bytes], bool]) -> bool:
    """Whether JSON file `rel` has a format's shape: a small file is parsed and `whole(document)` asked, a large
    one is judged by `ends(head, tail)`, its first and last bytes (`peek`), without reading it all."""
    try:
        if (storage.fs.get_file_info(storage.path(rel)).size or 0) <= SMALL:
            return whole(json.loads(storage.read_bytes(rel).decode("utf-8-sig")))
        head, tail, _ = peek(storage, rel)
    except (OSError, ValueError, RecursionError):  # (ValueError: also OutsideRoot, not UTF-8, not JSON)
        return False
    return ends(head, tail)


def _coco_document(doc: Any) -> bool:
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    return (isinstance(doc, dict) and isinstance(doc.get("images"), list) and isinstance(anns, list) and bool(anns)
            and isinstance(anns[0], dict) and "caption" in anns[0])


def _looks_coco(storage: Storage, rel: str) -> bool:
    # Large (COCO train is ~90 MB): "images" leads the document and the annotations end it
    return looks_like(storage, rel, _coco_document, lambda head, tail: b'"images"' in head + tail
                      and b'"caption"' in tail and b'"image_id"' in tail)


class CocoSource(Source):
    format = "coco"
    description = "COCO captions JSON (images + annotations with image_id/caption), at the top or in annotations/"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        if file is not None:
            self.paths = [file]
        else:
            # a captions_* file is read even when it does not look right, so its error is reported, not skipped
            self.paths = [f for f in json_candidates(storage, storage.files(recursive=False))
                          if "caption" in PurePosixPath(f).name.lower() or _looks_coco(storage, f)]
            if not self.paths:
                raise SourceError(f"no COCO captions JSON in {storage.describe('')} or its {ANNOTATION_DIR}/ folder: "
                                  f"expected a JSON file with 'images' and 'annotations' lists whose entries have "
                                  f"'image_id' and 'caption'")
        # Parsed and checked up front, kept compactly: (image id, file name) in order, captions per image id, the
        # entries that are bad records (a file whose top level is not COCO's fails here)
        self._files = [self._load(rel) for rel in self.paths]

    def _load(self, rel: str) -> tuple[list[tuple[Any, str]], dict[Any, list[str]], list[Bad]]:
        """(image id, file name) of each good images entry, captions per image id, and the bad entries: an images
        entry without an id or file name, an annotation without an image id or caption, an orphan annotation."""
        where = self.storage.describe(rel)
        doc = load_json(self.storage, rel)
        if not isinstance(doc, dict):
            raise SourceError(f"{where}: expected a JSON object with 'images' and 'annotations', "
                              f"got {type(doc).__name__}")
        for key in ("images", "annotations"):
            if not isinstance(doc.get(key), list):
                got = "it is missing" if key not in doc else f"got {type(doc[key]).__name__}"
                raise SourceError(f"{where}: expected a top-level '{key}' list ({got}); a COCO captions file has "
                                  f"'images' [{{id, file_name}}] and 'annotations' [{{image_id, caption}}]")
        images: list[tuple[Any, str]] = []
        bad: list[Bad] = []
        for i, img in enumerate(doc["images"]):
            if not isinstance(img, dict) or not is_id(img.get("id")) or not isinstance(img.get("file_name"), str):
                bad.append((f"images[{i}]", R.Problem(R.MALFORMED, f"{rel} images[{i}] must be an object with an "
                                                      f"integer or string 'id' and a string 'file_name', got "
                                                      f"{brief(img)}")))
                continue
            images.append((img["id"], img["file_name"]))
        captions: dict[Any, list[str]] = {image_id: [] for image_id, _ in images}
        for i, ann in enumerate(doc["annotations"]):
            if not isinstance(ann, dict) or not is_id(ann.get("image_id")) or not isinstance(ann.get("caption"), str):
                bad.append((f"annotations[{i}]", R.Problem(R.MALFORMED, f"{rel} annotations[{i}] must be an object "
                                                           f"with an 'image_id' and a string 'caption', got "
                                                           f"{brief(ann)}")))
            elif ann["image_id"] not in captions:
                bad.append((f"annotations[{i}]", R.Problem(R.ORPHAN, f"{rel} annotations[{i}] has image_id "
                                                           f"{brief(ann['image_id'])}, which is not the id of any "
                                                           f"entry in 'images'")))
            else:
                captions[ann["image_id"]].append(ann["caption"])
        return images, captions, bad

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        found = json_candidates(storage, files)
        return len(found) <= DETECT_MAX and any(_looks_coco(storage, f) for f in found)

    def annotation_files(self) -> list[str]:
        return list(self.paths)

    def _exists(self, rel: str) -> bool:
        try:
            return self.storage.is_file(rel)
        except (OSError, ValueError):  # a bad file name (OutsideRoot, BadPath): the engine reports it on the record
            return False

    def _image_dir(self, rel: str, images: list[tuple[Any, str]]) -> str:
        """The folder the file names are relative to, decided once per JSON file from its first image."""
        if not images:
            return ""
        subset = split_of(rel)[1]
        prefixes = ["", "images/"] + ([f"{subset}/", f"images/{subset}/"] if subset else [])
        first = images[0][1]
        return next((p for p in prefixes if self._exists(p + first)), "images/")

    def records(self) -> Iterator[R.SourceRecord]:
        """Each image with all its captions, in the order of 'images'; then each bad entry of the file."""
        number = 0
        for rel, (images, captions, bad) in zip(self.paths, self._files, strict=True):
            stem, split = PurePosixPath(rel).stem, split_of(rel)[0]
            prefix = self._image_dir(rel, images)
            for image_id, file_name in images:
                number += 1
                key, where, image = f"{stem}/{image_id}", f"{rel} image {image_id}", prefix + file_name
                texts = captions[image_id]
                if not texts:
                    problem = R.Problem(R.NO_TEXT, f"{where} ({image}) has no captions in 'annotations'")
                    yield R.SourceRecord(number, key, where, None, split=split, problem=problem)
                    continue
                yield R.SourceRecord(number, key, where, R.Annotation(image=image, captions=R.by_lang(texts)),
                                     split=split)
            for position, problem in bad:
                number += 1
                yield R.SourceRecord(number, f"{stem}/{position}", f"{rel} {position}", None, split=split,
                                     problem=problem)
