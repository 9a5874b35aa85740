"""Whether an output file can be used: the one place that says how each kind of file is checked.

    a file whose sha256 was recorded   the same sha256 (a stage result's outputs, a manifest's shards)
    Parquet (.parquet)                 its footer reads (a truncated file has none)
    torch (.pt)                        it loads with `torch.load(..., weights_only=True)`
    JSON (.json)                       it parses

A file that fails is corrupt (a killed copy, a full disk, a bad sync). Whatever would reuse it (a cached
result, a kept shard, a resume checkpoint) rebuilds it instead, with a `CorruptOutputWarning` naming it;
a stage that reads it as its input raises `CorruptOutput`: one line naming the file and the stage to run
again, never a library's traceback.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mmcore.io import file_sha256

Warn = Callable[[str], None]  # where a function that rebuilds a corrupt output says so


class CorruptOutputWarning(UserWarning):
    """A corrupt output was found and is being rebuilt (filter it like any warning, or make it an error)."""


class CorruptOutput(RuntimeError):
    """An output that exists but cannot be used; `stage` is the stage that writes it again."""

    def __init__(self, path: str | Path, why: str, stage: str | None = None):
        self.path, self.why, self.stage = Path(path), why, stage
        again = f": run the {stage} stage again (--refresh {stage})" if stage else ""
        super().__init__(f"{path} is corrupt ({why}){again}")


def warn(message: str) -> None:
    """The default `Warn`: a Python warning of category CorruptOutputWarning."""
    warnings.warn(message, CorruptOutputWarning, stacklevel=3)


def reason(exc: BaseException) -> str:
    """The first line of an exception, short enough for a one-line message."""
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]  # torch's and Arrow's first sentence
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def load_torch(path: str | Path, stage: str | None = None) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; CorruptOutput (naming `stage`, the stage that writes
    the file) when it does not load, FileNotFoundError when there is no file."""
    import torch

    path = Path(path)
    if not path.is_file():
        hint = f": run the {stage} stage first" if stage else ""
        raise FileNotFoundError(f"{path} does not exist{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # a truncated zip archive, a bad pickle, an unsafe global: all unusable
        why = f"torch.load fails on its {path.stat().st_size} bytes: {reason(exc)}"
        raise CorruptOutput(path, why, stage) from None


def read_json(path: str | Path, stage: str | None = None) -> Any:
    """A JSON file; CorruptOutput (naming `stage`) when it does not parse."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptOutput(path, reason(exc), stage) from None


def parquet_problem(path: str | Path) -> str | None:
    """Why a Parquet file cannot be read (its footer: schema, row groups, key-value metadata); None if it can."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except MemoryError:
        raise
    except Exception as exc:  # ArrowInvalid ("magic bytes not found in footer"), OSError
        return reason(exc)
    return None


def _why(read: Callable[[str | Path], Any], path: str | Path) -> str | None:
    """Why `read` (a reader that raises CorruptOutput) refuses `path`; None if it reads."""
    try:
        read(path)
    except CorruptOutput as exc:
        return exc.why
    return None


def torch_problem(path: str | Path) -> str | None:
    """Why a torch file does not load with weights_only; None if it does."""
    return _why(load_torch, path)


def json_problem(path: str | Path) -> str | None:
    """Why a JSON file does not parse; None if it does."""
    return _why(read_json, path)


def digest_problem(path: str | Path, sha256: str) -> str | None:
    """Why a file is not the one recorded (another sha256); None if it is."""
    actual = file_sha256(path)
    return None if actual == sha256 else f"sha256 {actual[:12]}... is not the recorded {sha256[:12]}..."


_BY_KIND: dict[str, Callable[[str | Path], str | None]] = {
    ".parquet": parquet_problem, ".pt": torch_problem, ".json": json_problem}


def problem(path: str | Path, sha256: str | None = None) -> str | None:
    """Why `path` cannot be used ("missing", another sha256, unreadable); None when it is intact.

    With `sha256` (recorded when the file was written) the bytes must be those; without, the file must read
    as its kind (by suffix; other files only need to exist).
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    if sha256 is not None:
        return digest_problem(path, sha256)
    check = _BY_KIND.get(path.suffix)
    return check(path) if check else None


def problems(files: Mapping[Path, str | None] | list[Path]) -> dict[Path, str]:
    """path -> why, for each of `files` (path -> recorded sha256, or None / a plain list: checked by kind)
    that is not intact."""
    items = files.items() if isinstance(files, Mapping) else ((p, None) for p in files)
    found = {Path(path): problem(path, sha256) for path, sha256 in items}
    return {path: why for path, why in found.items() if why is not None}


def require_intact(files: Mapping[Path, str | None] | list[Path], stage: str) -> None:
    """Raises for the first of `files` that is not intact: FileNotFoundError when it is missing, else
    CorruptOutput; both name the file and `stage`, the stage that writes it."""
    for path, why in problems(files).items():
        if why == "missing":
            raise FileNotFoundError(f"{path} does not exist: run the {stage} stage again (--refresh {stage})")
        raise CorruptOutput(path, why, stage)
