"""WebDataset: .tar shards whose consecutive members `<key>.jpg`, `<key>.txt`, `<key>.json` form one sample."""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from collections.abc import Iterator

from mmcore.data import records as R
from mmcore.data.sources.base import IMAGE_EXTENSIONS, Source, SourceError
from mmcore.data.storage import Storage

TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error)  # what a file that is not (or no longer) a tar raises
EXPECTED = ".tar shards of <key>.jpg (or another image type) + <key>.txt and/or <key>.json members"

Members = dict[str, tuple[str, bytes]]  # extension (after the first dot, lower case) -> (member name, bytes)


def _split(name: str) -> tuple[str, str] | None:
    """Member name -> (sample key, extension): the key ends at the first dot of the base name."""
    base = posixpath.basename(name)
    if base.startswith(".") or "." not in base:
        return None  # not part of a sample (e.g. ._x resource forks, README)
    cut = len(name) - len(base) + base.index(".")
    return name[:cut], name[cut + 1:].lower()


class WebDatasetSource(Source):
    format = "webdataset"
    description = EXPECTED

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        self.paths = [file] if file else [f for f in storage.files() if f.lower().endswith(TAR_EXTENSIONS)]
        if not self.paths:
            raise SourceError(f"{storage.describe('')} has no .tar files: expected {EXPECTED}")
        for rel in self.paths:  # reads one header block of each shard, so a bad file fails before any record
            if not storage.is_file(rel):
                raise SourceError(f"{storage.describe(rel)} does not exist: expected {EXPECTED}")
            try:
                with storage.open(rel) as fh, tarfile.open(fileobj=fh, mode="r|*"):
                    pass
            except TAR_ERRORS as exc:
                raise SourceError(f"{storage.describe(rel)} is not a tar archive ({exc}): expected {EXPECTED}") \
                    from None

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        return any(f.lower().endswith(TAR_EXTENSIONS) for f in files)

    def annotation_files(self) -> list[str]:
        return list(self.paths)

    def records(self) -> Iterator[R.SourceRecord]:
        for number, (rel, key, members) in enumerate(self._samples(), 1):
            yield self._record(number, rel, key, members)

    def _samples(self) -> Iterator[tuple[str, str, Members | R.Problem]]:
        """(shard, sample key, its members) in shard order; a shard cut short ends with its problem."""
        for rel in self.paths:
            key, members = None, {}
            try:
                with self.storage.open(rel) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
                    for member in tar:  # streamed: a member's bytes must be read before the next one
                        split = _split(member.name.removeprefix("./")) if member.isfile() else None
                        if split is None:
                            continue
                        data = tar.extractfile(member).read()  # first: a sample cut short is not started
                        if split[0] != key:
                            if key is not None:
                                yield rel, key, members
                            key, members = split[0], {}
                        members.setdefault(split[1], (member.name, data))
            except TAR_ERRORS as exc:
                if key is not None:
                    yield rel, key, members
                last = f" after sample {key}" if key is not None else ""
                yield rel, "#error", R.Problem(R.MALFORMED, f"{rel} is cut short or corrupt{last}: {exc}")
                continue
            if key is not None:
                yield rel, key, members

    def _record(self, number: int, rel: str, key: str, members: Members | R.Problem) -> R.SourceRecord:
        record_key, where = f"{rel}/{key}", f"{rel} member {key}"
        if isinstance(members, R.Problem):
            return R.SourceRecord(number, record_key, rel, None, problem=members)
        captions: dict[str, list[str]] = {}
        qa: list[R.QA] = []
        if "txt" in members:
            name, raw = members["txt"]
            text = R.decode_text(raw, f"{rel} member {name}")
            if isinstance(text, R.Problem):
                return R.SourceRecord(number, record_key, where, None, problem=text)
            captions = R.by_lang(line.strip() for line in text.splitlines() if line.strip())
        if "json" in members:
            parsed = _from_json(*members["json"], f"{rel} member {members['json'][0]}")
            if isinstance(parsed, R.Problem):
                return R.SourceRecord(number, record_key, where, None, problem=parsed)
            for lang, texts in parsed.captions.items():
                captions.setdefault(lang, []).extend(texts)
            qa = parsed.qa
        image = next((members[ext] for ext in members if ext in IMAGE_EXTS), None)
        if image is None:
            found = ", ".join(name for name, _ in members.values())
            problem = R.Problem(R.MISSING_FILE, f"{where}: no image member ({key}.jpg, .png, ...); found {found}")
            return R.SourceRecord(number, record_key, where, None, problem=problem)
        ann = R.Annotation(image=image[0], captions=captions, qa=qa)
        problem = None if captions or qa else R.Problem(R.NO_TEXT, f"{where}: no {key}.txt or {key}.json text")
        return R.SourceRecord(number, record_key, where, ann, image_bytes=image[1], problem=problem)


def _from_json(name: str, raw: bytes, where: str) -> R.Annotation | R.Problem:
    """Canonical fields (`captions` {lang: [texts]} or a list, `qa`) and/or a single `caption` or `text`."""
    text = R.decode_text(raw, where)
    if isinstance(text, R.Problem):
        return text
    data = R.load_json_text(text, where, lines=True)
    if isinstance(data, R.Problem):
        return data
    if not isinstance(data, dict):
        return R.Problem(R.MALFORMED, f"{where}: expected a JSON object, found {type(data).__name__}")
    captions = data.get("captions") or {}
    if isinstance(captions, list) and all(isinstance(c, str) for c in captions):
        captions = R.by_lang(captions)  # a plain list says no language
    ann = R.parse_annotation({"image": name, "captions": captions, "qa": data.get("qa") or []}, where)
    single = data.get("caption", data.get("text"))
    if isinstance(ann, R.Problem) or single is None:
        return ann
    if not isinstance(single, str):
        return R.Problem(R.MALFORMED, f"{where}: caption: expected a string, found {type(single).__name__}")
    ann.captions.setdefault(R.guess_lang(single), []).append(single)
    return ann
