"""Where a source's files live: a local folder or an object-store prefix, read through `pyarrow.fs`.

`Storage("data/raw/coco")` and `Storage("s3://bucket/coco")` behave the same. For S3 the usual
environment is honoured (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), and
`AWS_ENDPOINT_URL` (or `?endpoint_override=...` in the URI) points at an S3-compatible server.
"""

from __future__ import annotations

import errno
import os
import posixpath
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from mmcore.io import is_uri


class OutsideRoot(ValueError):
    """A relative path that escapes the dataset root (`../x`, an absolute path, or a symlink out)."""


class BadPath(ValueError):
    """A relative path that no file can have: a NUL byte, text that is not Unicode, a name over the
    filesystem's limit, a symlink loop."""


class Unreadable(OSError):
    """A local file that is there but cannot be read (permission denied, an I/O error)."""


BAD_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.EILSEQ}
MISSING_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def _shown(rel: str, limit: int = 200) -> str:
    """`rel` for a message: quoted, cut to `limit` characters."""
    text = repr(rel) if len(rel) <= limit else f"{rel[:limit]!r}... ({len(rel)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
        if "\x00" in rel:
            raise BadPath(f"{_shown(rel)} holds a NUL byte: no file name can")
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            raise BadPath(f"{_shown(rel)} is not valid Unicode text (a lone surrogate)") from None
        if rel.startswith("/") or "\\" in rel:
            raise OutsideRoot(f"{_shown(rel)} is not a relative path inside {self.uri}")
        norm = posixpath.normpath(rel) if rel else "."
        if norm == ".." or norm.startswith("../"):
            raise OutsideRoot(f"{_shown(rel)} points outside {self.uri}")
        full = self._base if norm == "." else f"{self._base}/{norm}"
        if self.local:
            try:
                inside = Path(full).resolve().is_relative_to(Path(self._base).resolve())
            except (OSError, RuntimeError) as exc:  # a name too long; RuntimeError: a symlink loop
                raise BadPath(f"{_shown(rel)} cannot name a file: {getattr(exc, 'strerror', None) or exc}") from None
            if not inside:
                raise OutsideRoot(f"{_shown(rel)} resolves outside {self.uri} (symlink)")
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
        """The file's bytes.

        Raises OutsideRoot or BadPath for a path that cannot be read here, FileNotFoundError when the file
        is absent (or a folder), Unreadable when a local file cannot be read; other errors of an object
        store (a lost connection) as they are, for a retry.
        """
        path = self.path(rel)
        try:
            with self.fs.open_input_stream(path) as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"{self.describe(rel)} does not exist") from None
        except OSError as exc:
            raise self._read_error(rel, path, exc) from None

    def _read_error(self, rel: str, path: str, exc: OSError) -> Exception:
        """The error to raise for `exc`, raised by reading `rel`."""
        if exc.errno in BAD_PATH_ERRNOS:
            return BadPath(f"{_shown(rel)} cannot name a file: {os.strerror(exc.errno)}")
        try:  # pyarrow reports a missing object (or a folder) as a plain OSError on some filesystems
            found = self.fs.get_file_info(path).type
        except OSError:
            found = None
        if (found is not None and found != pafs.FileType.File) or exc.errno in MISSING_ERRNOS:
            return FileNotFoundError(f"{self.describe(rel)} does not exist")
        if self.local:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            return Unreadable(exc.errno, f"{self.describe(rel)} cannot be read: {reason}")
        return exc

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
        """Relative paths of the files under `rel`, sorted; hidden files and folders are left out.

        A local file name that is not UTF-8 is listed with its bad bytes as lone surrogates (as `os` does):
        its record is then rejected, instead of the listing failing.
        """
        base = self.path(rel)
        prefix = self.path("")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
            paths = [info.path for info in infos if info.type == pafs.FileType.File]
        except UnicodeDecodeError:  # pyarrow cannot list a name that is not UTF-8
            if not self.local:
                raise
            paths = _local_files(base, recursive)
        out = []
        for path in paths:
            relpath = path[len(prefix):].lstrip("/")
            if any(part.startswith(".") for part in relpath.split("/")):
                continue
            out.append(relpath)
        return sorted(out)


def _local_files(base: str, recursive: bool) -> list[str]:
    """The files under the local folder `base`, with os (whose names may hold surrogates)."""
    if not os.path.isdir(base):
        return []
    out = []
    for folder, subfolders, names in os.walk(base):
        out += [f"{folder}/{name}" for name in names if os.path.isfile(f"{folder}/{name}")]
        if not recursive:
            subfolders.clear()
    return out
