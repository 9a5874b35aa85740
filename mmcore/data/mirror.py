"""A local working copy of folders kept in object storage (or any `Storage` root).

`pull` brings a remote folder's files down and `push` sends a local folder's files up, file by file the
way `aws s3 sync` decides: a file is copied when the other side lacks it, has another size, or holds an
older copy (modification times; a pulled file takes its remote time, so it is not pushed back).
Files that only the receiving side has are left alone.

Completeness: files named in `last` (a stage's manifest or final checkpoint: the mark that its folder is
complete) are copied after every other file, so a reader on either side never finds the mark before the
files it vouches for. Each file lands whole: an S3 upload becomes visible only when complete; on other
filesystems, and locally, a file is written under a hidden temporary name and renamed. A killed push or
pull therefore leaves whole files and no mark, and running it again copies what is still missing.
Hidden files (temporary files, locks) are never copied.

`only` limits either direction to some files of the folder: a shard task on a worker pulls the inputs of its
shard and pushes its output, without touching the rest. `remove` deletes a folder (or some files of it).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from mmcore.data.storage import Storage
from mmcore.io import atomic_path

MTIME_SLACK_S = 2.0  # clock and timestamp-resolution differences between this machine and the store


@dataclass
class SyncReport:
    copied: list[str] = field(default_factory=list)  # relative paths, in the order they were copied
    up_to_date: int = 0
    bytes: int = 0


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _ordered(names: Sequence[str], last: Sequence[str]) -> list[str]:
    marks = [n for n in last if n in names]
    return sorted(n for n in names if n not in marks) + marks


def _remote_files(remote: Storage, only: Sequence[str] | None = None) -> dict[str, pafs.FileInfo]:
    """The files under `remote` (those `only` names, asked for one by one: no listing of a large folder)."""
    base = remote.path("")
    if only is not None:
        infos = remote.fs.get_file_info([remote.path(rel) for rel in only]) if only else []
    else:
        infos = remote.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        rel = info.path[len(base):].lstrip("/")
        if info.type == pafs.FileType.File and not _hidden(rel):
            out[rel] = info
    return out


def _local_files(local: Path, only: Sequence[str] | None = None) -> dict[str, os.stat_result]:
    if not local.is_dir():
        return {}
    paths = local.rglob("*") if only is None else (local / rel for rel in only)
    out = {}
    for path in paths:
        rel = path.relative_to(local).as_posix()
        if path.is_file() and not _hidden(rel):
            out[rel] = path.stat()
    return out


def _current(src_size: int, src_mtime: float, dst_size: int, dst_mtime: float) -> bool:
    """Whether the destination already holds this copy: same size and not older than the source."""
    return dst_size == src_size and src_mtime <= dst_mtime + MTIME_SLACK_S


def _copy(src: pafs.FileSystem, src_path: str, dst: pafs.FileSystem, dst_path: str) -> None:
    pafs.copy_files(src_path, dst_path, source_filesystem=src, destination_filesystem=dst)


def _upload(path: Path, remote: Storage, rel: str) -> None:
    fs, dest = remote.fs, remote.path(rel)
    local = pafs.LocalFileSystem()
    if fs.type_name == "s3":  # an object appears only once its upload completes
        _copy(local, str(path), fs, dest)
        return
    parent, name = posixpath.split(dest)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        _copy(local, str(path), fs, tmp)
        fs.move(tmp, dest)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise


def push(local: str | Path, remote: Storage, last: Sequence[str] = (), only: Sequence[str] | None = None
         ) -> SyncReport:
    """Upload the files of `local` (those `only` names) that `remote` lacks or holds older copies of; `last`
    go last.

    When other files of a folder the store holds complete are about to change, its marks (`last`) are
    deleted from the store first, and uploaded again at the end if they are among the files pushed: a
    reader meanwhile sees an incomplete folder, never a mark beside files it does not describe.
    """
    local, report = Path(local), SyncReport()
    mine = _local_files(local, only)
    theirs = _remote_files(remote, None if only is None else [*only, *(m for m in last if m not in only)])

    def current(rel: str) -> bool:
        st, info = mine[rel], theirs.get(rel)
        return info is not None and _current(st.st_size, st.st_mtime, info.size, info.mtime.timestamp())

    order = _ordered(list(mine), last)
    if any(not current(rel) for rel in order if rel not in last):
        for rel in last:
            if rel in theirs:
                remote.fs.delete_file(remote.path(rel))
                del theirs[rel]
    for rel in order:
        if current(rel):
            report.up_to_date += 1
            continue
        _upload(local / rel, remote, rel)
        report.copied.append(rel)
        report.bytes += mine[rel].st_size
    return report


def pull(remote: Storage, local: str | Path, last: Sequence[str] = (),
         only: Sequence[str] | None = None) -> SyncReport:
    """Download the files of `remote` that `local` lacks or holds older copies of; `last` go last.
    `only` limits the pull to those relative paths."""
    local, report = Path(local), SyncReport()
    mine, theirs = _local_files(local, only), _remote_files(remote, only)
    for rel in _ordered(list(theirs), last):
        info, st = theirs[rel], mine.get(rel)
        remote_mtime = info.mtime.timestamp()
        if st is not None and _current(info.size, remote_mtime, st.st_size, st.st_mtime):
            report.up_to_date += 1
            continue
        dest = local / rel
        with atomic_path(dest) as tmp:
            _copy(remote.fs, remote.path(rel), pafs.LocalFileSystem(), str(tmp))
            os.utime(tmp, (remote_mtime, remote_mtime))
        report.copied.append(rel)
        report.bytes += info.size
    return report


def remove(remote: Storage, only: Sequence[str] | None = None) -> int:
    """Delete the folder `remote` with everything in it (or only the files `only` names); returns the files
    deleted. A folder or file that is not there is no error."""
    found = _remote_files(remote, only)
    for rel in _ordered(list(found), ()):
        remote.fs.delete_file(remote.path(rel))
    if only is None and remote.fs.get_file_info(remote.path("")).type == pafs.FileType.Directory:
        remote.fs.delete_dir(remote.path(""))  # hidden files and empty folders (markers on S3) too
    return len(found)
