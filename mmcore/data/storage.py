"""Where a source's files live: a local folder or an object-store prefix, read through `pyarrow.fs`.

`Storage("data/raw/coco")` and `Storage("s3://bucket/coco")` behave the same. For S3 the usual
environment is honoured (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), and
`AWS_ENDPOINT_URL` (or `?endpoint_override=...` in the URI) points at an S3-compatible server.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs


class OutsideRoot(ValueError):
    """A relative path that escapes the dataset root (`../x`, an absolute path, or a symlink out)."""


def is_uri(path: str) -> bool:
    return "://" in path


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    parsed = urlparse(uri)
    if parsed.query:  # e.g. ?endpoint_override=...: let pyarrow parse its own options
        return pafs.FileSystem.from_uri(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))}
    if endpoint:
        ep = urlparse(endpoint)
        kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
    return pafs.S3FileSystem(**kwargs), (parsed.netloc + parsed.path).rstrip("/")


class Storage:
    """Read-only access to the files under one root; every relative path is checked to stay inside it."""

    def __init__(self, root: str | Path):
        root = str(root)
        self.uri = root if is_uri(root) else str(Path(root).resolve())
        self._fs: pafs.FileSystem | None = None
        self._base = ""

    def __getstate__(self) -> dict:  # process-pool workers reconnect on first use
        return {"uri": self.uri, "_fs": None, "_base": ""}

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    @property
    def local(self) -> bool:
        return not is_uri(self.uri)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if self.local:
                self._fs, self._base = pafs.LocalFileSystem(), self.uri
            elif self.uri.startswith("s3://"):
                self._fs, self._base = _s3(self.uri)
            else:
                self._fs, self._base = pafs.FileSystem.from_uri(self.uri)
        return self._fs

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel`; raises OutsideRoot when it would leave the root."""
        self.fs  # noqa: B018 - sets self._base
        if rel.startswith("/") or "\\" in rel:
            raise OutsideRoot(f"{rel!r} is not a relative path inside {self.uri}")
        norm = posixpath.normpath(rel) if rel else "."
        if norm == ".." or norm.startswith("../"):
            raise OutsideRoot(f"{rel!r} points outside {self.uri}")
        full = self._base if norm == "." else f"{self._base}/{norm}"
        if self.local and not Path(full).resolve().is_relative_to(Path(self._base).resolve()):
            raise OutsideRoot(f"{rel!r} resolves outside {self.uri} (symlink)")
        return full

    def child(self, rel: str) -> Storage:
        return Storage(f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri)

    def describe(self, rel: str = "") -> str:
        """A human-readable location for messages."""
        return f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is absent."""
        path = self.path(rel)
        try:
            with self.fs.open_input_stream(path) as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"{self.describe(rel)} does not exist") from None
        except OSError as exc:  # pyarrow reports a missing object as OSError on some filesystems
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                raise FileNotFoundError(f"{self.describe(rel)} does not exist") from exc
            raise

    def open(self, rel: str) -> IO[bytes]:
        """A streaming binary reader (use as a context manager)."""
        if not self.is_file(rel):
            raise FileNotFoundError(f"{self.describe(rel)} does not exist")
        return self.fs.open_input_stream(self.path(rel))

    def open_file(self, rel: str) -> pa.NativeFile:
        """A random-access binary reader (Parquet needs to seek to its footer)."""
        if not self.is_file(rel):
            raise FileNotFoundError(f"{self.describe(rel)} does not exist")
        return self.fs.open_input_file(self.path(rel))

    def files(self, rel: str = "", recursive: bool = True) -> list[str]:
        """Relative paths of the files under `rel`, sorted; hidden files and folders are left out."""
        base = self.path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
        prefix = self.path("")
        out = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relpath = info.path[len(prefix):].lstrip("/")
            if any(part.startswith(".") for part in relpath.split("/")):
                continue
            out.append(relpath)
        return sorted(out)
