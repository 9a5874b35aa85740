"""The embedded MLflow store (SQLite) is created and migrated once, under a lock.

MLflow creates and migrates a SQLite store on its first use in a process. Runs started together in a
fresh folder would each do it at once, and the migrations race: the store is left half-migrated (a
`_alembic_tmp_<table>` beside the table it was replacing), and from then on every run in that folder
fails. So the first use in each process takes a file lock beside the store and opens it there: one
process migrates, the others wait and find it ready. A store that an interrupted migration left with
such a leftover table is repaired (the leftover dropped: the table it was replacing is intact, and the
migration runs again); one that cannot be is named in a one-line error.

A tracking server (http://...) migrates its own store: nothing to do here.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mmcore.io import folder_lock

_READY: set[str] = set()
_LOCK = threading.Lock()
LEFTOVER = "_alembic_tmp_"


class BrokenStore(RuntimeError):
    """An embedded store that cannot be opened or repaired."""


def ensure(uri: str | None = None) -> None:
    """Make sure the store at `uri` (default: the tracking URI) exists and is migrated, once per process."""
    uri = uri or mlflow.get_tracking_uri()
    with _LOCK:
        if uri in _READY:
            return
        if uri.startswith("sqlite:///"):
            _open_sqlite(uri)
        _READY.add(uri)


def _open_sqlite(uri: str) -> None:
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path):  # other processes opening this store wait here
        if path.exists():
            repair(path)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates and migrates it
        except Exception as exc:
            raise BrokenStore(f"the MLflow store {path} could not be opened or migrated ({_first_line(exc)}); "
                              f"move it away (mv {path} {path}.broken) to start a new one, or restore it from "
                              "a backup") from exc


def repair(path: Path) -> list[str]:
    """Drop the leftover tables of an interrupted migration whose original table is intact; returns them.
    A leftover without its original (the migration got further) cannot be repaired safely."""
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        leftovers = sorted(t for t in tables if t.startswith(LEFTOVER))
        orphans = [t for t in leftovers if t.removeprefix(LEFTOVER) not in tables]
        if orphans:
            raise BrokenStore(f"the MLflow store {path} was left half-migrated ({', '.join(orphans)} without the "
                              f"table it replaces); move it away (mv {path} {path}.broken) to start a new one, or "
                              "restore it from a backup")
        for table in leftovers:
            db.execute(f'DROP TABLE "{table}"')
    return leftovers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
