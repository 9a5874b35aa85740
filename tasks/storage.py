"""Tasks that keep the local working copy of an object-store `data_root` in step with the store.

A stage flow pulls the folders it reads before its work and pushes the folder it wrote after it
(`mmcore.data.mirror`), so a stage that runs on another machine finds its inputs. With a local
data_root there is nothing to copy and no task runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prefect import get_run_logger, task

from mmcore.catalog import COMPLETION_MARKS, Catalog
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
def push_folder(local: str, remote: str, last: Sequence[str] = ()) -> int:
    """Send a folder's new and changed files to the store, `last` (its completion mark) after the rest."""
    report = mirror.push(local, Storage(remote), last)
    get_run_logger().info("pushed %d file(s), %.1f MB, to %s (%d up to date)", len(report.copied),
                          report.bytes / 1e6, remote, report.up_to_date)
    return len(report.copied)


def pull(cat: Catalog, *folders: os.PathLike[str], only: Sequence[str] | None = None) -> None:
    """Pull each folder of the working copy (only the files `only` names, if given) from the store;
    nothing when data_root is local."""
    for folder in folders:
        if (remote := cat.remote_of(folder)) is not None:
            pull_folder(remote, str(folder), COMPLETION_MARKS, only)


def push(cat: Catalog, folder: os.PathLike[str]) -> None:
    """Push one folder of the working copy to the store (nothing when data_root is local)."""
    if (remote := cat.remote_of(folder)) is not None:
        push_folder(str(folder), remote, COMPLETION_MARKS)
