"""Atomic file writes, folder locks and content digests: a killed run never leaves a half-written file
behind, and two runs writing the same folder take turns."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder: str | Path, timeout: float | None = None) -> Iterator[Path]:
    """Holds an exclusive lock on `folder` for the block; yields the lock file.

    Two processes that write the same output folder (two pipeline runs on one dataset) take turns;
    the second then finds the first one's finished files. The lock is `flock` on a file named after the
    folder's resolved path in the temp folder (so the output folder and its parent hold only data), so it
    serialises processes on one machine; the kernel releases it when its holder dies, so a killed run never
    leaves it held. Not reentrant: a process that holds it must not take it again. `timeout` (seconds)
    raises TimeoutError instead of waiting forever.
    """
    folder = Path(folder).resolve()
    locks = Path(tempfile.gettempdir()) / "mmcore-locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:24]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{folder} is locked by another run ({path}) after {timeout} s") from None
                time.sleep(0.1)
        yield path
    finally:
        os.close(fd)  # also releases the lock


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def combined_digest(parts: list[str]) -> str:
    """Order-sensitive digest of several digests (e.g. one per shard)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically and byte-reproducibly.

    torch.save names the archive inside the file after the file itself; saving through a buffer keeps
    that name fixed, so the same tensors always give the same bytes (and digests) whatever the
    temporary file was called.
    """
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def is_uri(path: str) -> bool:
    """Whether `path` is a URI (s3://..., file://...) rather than a local path."""
    return "://" in path
