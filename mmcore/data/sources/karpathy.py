"""Karpathy splits JSON (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).

    {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "split": "test",
                 "cocoid": 391895, "sentences": [{"raw": "A man with a red helmet ...", "tokens": [...]}]}],
     "dataset": "coco"}

One record per entry of `images`, with all its sentences as captions (the cased `raw` text; the lower-cased
`tokens` only where `raw` is missing). The file's split is kept: train and restval are training data
(restval is the part of COCO val2014 that Karpathy's split adds to training), val and test stay val and test.
The image is `filepath/filename`, relative to the root or its images/ folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from mmcore.data import records as R
from mmcore.data.sources.base import Source, SourceError
from mmcore.data.sources.coco import DETECT_MAX, brief, is_id, json_candidates, load_json, looks_like
from mmcore.data.storage import Storage

SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}  # Karpathy's split -> ours
NAME_PREFIX = "dataset_"  # dataset_coco.json: a file so named is read (and its errors reported) even if it looks wrong
Entry = tuple[int, Any, str, str, list[str]]  # (index in 'images', id, image path, split, captions)


def _karpathy_document(doc: Any) -> bool:
    images = doc.get("images") if isinstance(doc, dict) else None
    return (isinstance(images, list) and bool(images) and isinstance(images[0], dict)
            and "sentences" in images[0] and "split" in images[0])


def _looks_karpathy(storage: Storage, rel: str) -> bool:
    """A JSON object whose 'images' entries carry 'sentences' and a 'split'."""
    # Large (Karpathy's COCO file is ~140 MB): "images" leads it and its first entry is in the first 256 KB
    return looks_like(storage, rel, _karpathy_document, lambda head, _: all(
        key in head for key in (b'"images"', b'"sentences"', b'"split"', b'"filename"')))


def _sentence(value: Any) -> str | None:
    """The caption of one sentence: its `raw` text, else its tokens joined; None when it has neither."""
    if isinstance(value, dict) and isinstance(value.get("raw"), str):
        return value["raw"]
    tokens = value.get("tokens") if isinstance(value, dict) else None
    if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None


class KarpathySource(Source):
    format = "karpathy"
    description = ("Karpathy splits JSON (dataset_coco.json: 'images' entries with filepath/filename, split and "
                   "sentences)")

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        if file is not None:
            self.paths = [file]
        else:
            self.paths = [f for f in json_candidates(storage, storage.files(recursive=False))
                          if PurePosixPath(f).name.lower().startswith(NAME_PREFIX) or _looks_karpathy(storage, f)]
            if not self.paths:
                raise SourceError(f"no Karpathy splits JSON in {storage.describe('')}: expected a file like "
                                  f"dataset_coco.json with an 'images' list whose entries have 'filename', 'split' "
                                  f"and 'sentences' [{{raw}}]")
        self._files = [self._load(rel) for rel in self.paths]  # checked up front: a wrong file fails here

    def _load(self, rel: str) -> list[Entry | tuple[int, R.Problem]]:
        """Each entry of 'images' in file order: (index, id, image, split, captions), or (index, its problem)."""
        where = self.storage.describe(rel)
        doc = load_json(self.storage, rel)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            got = type(doc).__name__ if not isinstance(doc, dict) else f"'images' {type(doc.get('images')).__name__}"
            raise SourceError(f"{where}: expected a JSON object with an 'images' list of {{filepath, filename, split, "
                              f"sentences: [{{raw, tokens}}]}} (Karpathy's dataset_coco.json), got {got}")
        return [self._entry(rel, i, img) for i, img in enumerate(doc["images"])]

    def _entry(self, rel: str, i: int, img: Any) -> Entry | tuple[int, R.Problem]:
        at = f"{rel} images[{i}]"
        if not (isinstance(img, dict) and isinstance(img.get("filename"), str)
                and isinstance(img.get("filepath", ""), str) and isinstance(img.get("sentences"), list)):
            return i, R.Problem(R.MALFORMED, f"{at} must be an object with a string 'filename' (and 'filepath'), a "
                                             f"'split' and a 'sentences' list, got {brief(img)}")
        if img.get("split") not in SPLITS:
            return i, R.Problem(R.MALFORMED, f"{at} has split {brief(img.get('split'))}; expected one of "
                                             f"{', '.join(SPLITS)}")
        texts = [_sentence(s) for s in img["sentences"]]
        if None in texts:
            j = texts.index(None)
            return i, R.Problem(R.MALFORMED, f"{at} sentences[{j}] must be an object with a string 'raw' (or a "
                                             f"'tokens' list of strings), got {brief(img['sentences'][j])}")
        ident = next((img[k] for k in ("cocoid", "imgid", "id") if is_id(img.get(k))), None)
        ident = ident if ident is not None else img["filename"]
        image = "/".join(p for p in (img.get("filepath", "").strip("/"), img["filename"]) if p)
        return i, ident, image, SPLITS[img["split"]], texts  # type: ignore[return-value]

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        found = json_candidates(storage, files)
        return len(found) <= DETECT_MAX and any(_looks_karpathy(storage, f) for f in found)

    def annotation_files(self) -> list[str]:
        return list(self.paths)

    def _prefix(self, entries: list[Entry | tuple[int, R.Problem]]) -> str:
        """The folder image paths are relative to, decided once per file from its first good entry."""
        first = next((e[2] for e in entries if len(e) == 5), None)
        for prefix in ("", "images/"):
            try:
                if first is None or self.storage.is_file(prefix + first):
                    return prefix
            except (OSError, ValueError):  # a bad file name: the engine reports it on the record
                return ""
        return ""

    def records(self) -> Iterator[R.SourceRecord]:
        """Each entry of 'images' in file order; a bad entry is a rejection where it is (`images[12]`)."""
        number = 0
        for rel, entries in zip(self.paths, self._files, strict=True):
            stem, prefix = PurePosixPath(rel).stem, self._prefix(entries)
            for entry in entries:
                number += 1
                if len(entry) == 2:
                    i, problem = entry
                    yield R.SourceRecord(number, f"{stem}/images[{i}]", f"{rel} images[{i}]", None, problem=problem)
                    continue
                i, ident, image, split, texts = entry
                key, where = f"{stem}/{ident}", f"{rel} images[{i}]"
                if not texts:
                    problem = R.Problem(R.NO_TEXT, f"{where} ({prefix + image}) has no sentences")
                    yield R.SourceRecord(number, key, where, None, split=split, problem=problem)
                    continue
                yield R.SourceRecord(number, key, where, R.Annotation(image=prefix + image, captions=R.by_lang(texts)),
                                     split=split)
