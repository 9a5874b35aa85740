"""Tasks that keep the local working copy of an object-store `data_root` in step with the store.

A stage flow pulls the folders it reads before its work and pushes the folder it wrote after it
(`mmcore.data.mirror`), so a stage that runs on another machine finds its inputs. With a local
data_root there is nothing to copy and no task runs.

The per-shard tasks of ingest and extract carry their own I/O: each works in the working copy of the process
it runs in (`own_copy`: on a Dask or Ray worker of another machine, that machine's own), pulls the files of
its shard there (`fetch`) and pushes what it wrote (`deliver`), so workers need no shared filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from prefect import get_run_logger, task

from mmcore.catalog import COMPLETION_MARKS, Catalog
from mmcore.config import PipelineConfig
from mmcore.data import mirror
from mmcore.data.storage import Storage


@task(retries=2, retry_delay_seconds=[2, 10])
def pull_folder(remote: str, local: str, last: Sequence[str] = (), only: Sequence[str] | None = None) -> int:
    """Bring the store's copy of a folder (or of the files `only` names) down; returns the files copied."""
    report = mirror.pull(Storage(remote), local, last, only)
    get_run_logger().info("pulled %d file(s), %.1f MB, from %s (%d up to date)", len(report.copied),
                          report.bytes / 1e6, remote, report.up_to_date)
    return len(report.copied)


@task(retries=2, retry_delay_seconds=[2, 10])
def push_folder(local: str, remote: str, last: Sequence[str] = (), only: Sequence[str] | None = None) -> int:
    """Send a folder's new and changed files (or those of the files `only` names) to the store, `last` (its
    completion mark) after the rest; returns the files copied."""
    report = mirror.push(local, Storage(remote), last, only)
    get_run_logger().info("pushed %d file(s), %.1f MB, to %s (%d up to date)", len(report.copied),
                          report.bytes / 1e6, remote, report.up_to_date)
    return len(report.copied)


@task(retries=2, retry_delay_seconds=[2, 10])
def remove_folder(remote: str, only: Sequence[str] | None = None) -> int:
    """Delete a folder of the store (or the files `only` names in it); returns the files deleted."""
    removed = mirror.remove(Storage(remote), only)
    if removed:
        get_run_logger().info("removed %d file(s) from %s", removed, remote)
    return removed


def pull(cat: Catalog, *folders: os.PathLike[str], only: Sequence[str] | None = None) -> None:
    """Pull each folder of the working copy (only the files `only` names, if given) from the store;
    nothing when data_root is local."""
    for folder in folders:
        if (remote := cat.remote_of(folder)) is not None:
            pull_folder(remote, str(folder), COMPLETION_MARKS, only)


def push(cat: Catalog, folder: os.PathLike[str], only: Sequence[str] | None = None) -> None:
    """Push one folder of the working copy (only the files `only` names, if given) to the store (nothing when
    data_root is local)."""
    if (remote := cat.remote_of(folder)) is not None:
        push_folder(str(folder), remote, COMPLETION_MARKS, only)


def remove(cat: Catalog, folder: os.PathLike[str], only: Sequence[str] | None = None) -> None:
    """Delete a folder of the working copy (or the files `only` names in it) from the store, not from the
    working copy (nothing when data_root is local)."""
    if (remote := cat.remote_of(folder)) is not None:
        remove_folder(remote, only)


# In a shard task: plain functions (no nested task runs); the shard task retries as a whole.


def own_copy(cfg: PipelineConfig, cat: Catalog) -> Catalog:
    """`cat` in the working copy of the process that calls this: the one this process resolves from `cfg`
    (`data_cache`, else this machine's default cache), not the path the flow's machine resolved. The same
    catalog in the flow's own process, or when data_root is local."""
    if cat.remote_root is None:
        return cat
    return replace(cat, root=Catalog.from_config(cfg).root)


def fetch(cat: Catalog, folder: os.PathLike[str], names: Sequence[str], into: Path | None = None) -> None:
    """Bring the files `names` of one folder of the working copy down from the store, into the folder itself
    or `into` (scratch space); nothing when data_root is local."""
    if (remote := cat.remote_of(folder)) is not None:
        pull_folder.fn(remote, str(into or folder), COMPLETION_MARKS, names)


def deliver(cat: Catalog, folder: os.PathLike[str], names: Sequence[str], source: Path | None = None) -> None:
    """Send the files `names` of one folder of the working copy (found there, or in `source`) to the store, in
    the order given, so `names[-1]` can be a shard's own mark; the folder's completion mark is taken down
    first if they change the folder. Nothing when data_root is local."""
    if (remote := cat.remote_of(folder)) is not None:
        pushed = 0
        for name in names:  # one at a time: the order given, not the alphabet's
            pushed += mirror.push(source or folder, Storage(remote), COMPLETION_MARKS, [name]).bytes
        get_run_logger().info("delivered %s, %.1f MB, to %s", ", ".join(names), pushed / 1e6, remote)
