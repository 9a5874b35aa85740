"""Images with sidecar captions: `photos/a.jpg` + `photos/a.txt` (one caption per non-empty line)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from mmcore.data import records as R
from mmcore.data.sources.base import IMAGE_EXTENSIONS, Source, SourceError
from mmcore.data.storage import BadPath, OutsideRoot, Storage, Unreadable

SIDECAR = ".txt"


def _stem(rel: str) -> str:
    return posixpath.splitext(rel)[0]


def _is_image(rel: str) -> bool:
    return rel.lower().endswith(IMAGE_EXTENSIONS)


def _is_sidecar(rel: str) -> bool:
    return rel.lower().endswith(SIDECAR)


class FolderSource(Source):
    format = "folder"
    description = "images anywhere under the folder, each with its captions in <same name>.txt next to it"

    def __init__(self, storage: Storage, file: str | None = None):
        super().__init__(storage, file)
        if file is None:
            files = storage.files()
        else:  # one image (or its sidecar): just that sample; `file` is a name in the root folder
            files = [f for f in storage.files(recursive=False) if _stem(f) == _stem(file)]
        self.images = [f for f in files if _is_image(f)]
        self.sidecars = [f for f in files if _is_sidecar(f)]
        if not self.images:
            raise SourceError(f"{storage.describe(file or '')}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                              f"found; expected images with their captions in <same name>.txt next to them")

    @classmethod
    def detect(cls, storage: Storage, files: list[str]) -> bool:
        sidecar_stems = {_stem(f) for f in files if _is_sidecar(f)}
        return any(_is_image(f) and _stem(f) in sidecar_stems for f in files)

    def annotation_files(self) -> list[str]:
        return list(self.sidecars)

    def records(self) -> Iterator[R.SourceRecord]:
        sidecars = {_stem(f): f for f in self.sidecars}
        image_stems = {_stem(f) for f in self.images}
        orphans = {f for f in self.sidecars if _stem(f) not in image_stems}
        for number, rel in enumerate(sorted([*self.images, *orphans]), 1):
            if rel in orphans:
                problem = R.Problem(R.MISSING_FILE, f"{rel} has captions but no image named {_stem(rel)}.<ext> "
                                                    f"next to it ({', '.join(IMAGE_EXTENSIONS)})")
                yield R.SourceRecord(number, rel, rel, None, problem=problem)
            else:
                yield self._record(number, rel, sidecars.get(_stem(rel)))

    def _record(self, number: int, rel: str, sidecar: str | None) -> R.SourceRecord:
        if sidecar is None:
            problem = R.Problem(R.NO_TEXT, f"{rel} has no caption file {_stem(rel)}{SIDECAR} next to it")
            # the annotation is kept so that the rejection names the image
            return R.SourceRecord(number, rel, rel, R.Annotation(image=rel), problem=problem)
        where = f"{rel} (captions {sidecar})"
        try:
            text = R.decode_text(self.storage.read_bytes(sidecar), sidecar)
        except FileNotFoundError as exc:  # removed since the folder was listed
            return R.SourceRecord(number, rel, where, None, problem=R.Problem(R.MISSING_FILE, str(exc)))
        except (OutsideRoot, BadPath, Unreadable) as exc:  # a symlink out, a name that is not UTF-8, no permission
            reason = {OutsideRoot: R.OUTSIDE_ROOT, BadPath: R.BAD_PATH}.get(type(exc), R.UNREADABLE)
            return R.SourceRecord(number, rel, where, None, problem=R.Problem(reason, f"{sidecar}: {exc}"))
        if isinstance(text, R.Problem):
            return R.SourceRecord(number, rel, where, None, problem=text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        ann = R.Annotation(image=rel, captions=R.by_lang(lines))
        problem = None if lines else R.Problem(R.NO_TEXT, f"{sidecar} has no caption lines")
        return R.SourceRecord(number, rel, where, ann, problem=problem)
