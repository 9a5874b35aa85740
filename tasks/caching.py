"""Prefect cache keys for the stages, computed from content digests rather than from task arguments.

A stage's key is a digest of what determines its output: the digests of its input data (dataset and
features manifests, checkpoint files), the config sections it reads, the code version (a digest of
the `mmcore` and `tasks` sources) and where the output is written. Arguments that only say where to log
(an MLflow run id) are left out, so a rerun of the same data, config and code finds the stored result
and does no model work; a change to one stage's config changes the keys of that stage and, through
their outputs' digests, of the stages downstream. `refresh` (the CLI's `--refresh STAGE`) forces a
stage to run and replace its cache entry.

Results are persisted by Prefect (`persist_result=True`) under `PREFECT_LOCAL_STORAGE_PATH` (by default
`$PREFECT_HOME/storage`); a cached result is used only while the files it names still exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

STAGES = ("pretrain", "extract", "train", "evaluate")
CACHE_EXPIRATION = timedelta(days=30)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Digest of the library and task sources (.py files of `mmcore` and `tasks`, by relative path).

    Any edit to them starts new cache entries; flows/ (wiring and CLI) does not change results.
    """
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in ("mmcore", "tasks"):
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_key(stage: str, parts: dict[str, Any]) -> str:
    """The cache key of `stage` from named digests and values (JSON-serialisable)."""
    payload = json.dumps({"stage": stage, "code": code_version(), **parts}, sort_keys=True, default=str)
    return f"mm-{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def digest_cache(stage: str, parts: Callable[[dict[str, Any]], dict[str, Any] | None],
                 outputs: Callable[[dict[str, Any]], list[str]] = lambda _: []) -> Callable[..., str | None]:
    """A Prefect `cache_key_fn` for a stage task.

    `parts(parameters)` returns the digests that determine the output (None: do not cache this call);
    `outputs(parameters)` lists the files the task writes. Their location is part of the key (the same
    data under another data root has its own entry); whether they still exist is checked when a cached
    result is used (`run_stage_task`).
    """

    def key(_context: Any, parameters: dict[str, Any]) -> str | None:
        found = parts(parameters)
        if found is None:
            return None
        return stage_key(stage, {**found, "outputs": [str(Path(p).resolve()) for p in outputs(parameters)]})

    return key


def check_refresh(refresh: list[str] | tuple[str, ...]) -> list[str]:
    """The stages `--refresh` names, with `all` expanded; an unknown name is an error, not a no-op."""
    names = list(STAGES) if "all" in refresh else list(refresh)
    unknown = sorted(set(names) - set(STAGES))
    if unknown:
        raise ValueError(f"--refresh names unknown stage(s) {unknown}; choose from {[*STAGES, 'all']}")
    return names


def run_stage_task(task: Any, *args: Any, refresh: bool = False, files: Callable[[Any], list[str]] = lambda _: [],
                   timeout: float | None = None, **kwargs: Any) -> tuple[Any, bool]:
    """Calls a cached stage task; returns its result and whether it came from the cache.

    `timeout` (seconds) fails the task run with a TaskRunTimeoutError when it takes longer.
    `files(result)` lists the files a result refers to: a cached result whose files were deleted since
    is of no use, so the task then runs again (and replaces the entry).
    """
    state = task.with_options(refresh_cache=refresh, timeout_seconds=timeout)(*args, return_state=True, **kwargs)
    result, cached = state.result(), state.name == "Cached"
    if cached and any(not Path(p).exists() for p in files(result)):
        state = task.with_options(refresh_cache=True, timeout_seconds=timeout)(*args, return_state=True, **kwargs)
        result, cached = state.result(), False
    return result, cached


def timeout_seconds(cfg: Any) -> float | None:
    """The per-task time limit `orchestration.timeout_minutes` sets, in seconds."""
    minutes = cfg.orchestration.timeout_minutes
    return None if minutes is None else 60.0 * minutes


def cached_tags(cached: bool | list[bool]) -> dict[str, str]:
    """The tag a stage's MLflow run gets: `cached` true when no task of the stage did any work."""
    flags = cached if isinstance(cached, list) else [cached]
    return {"cached": str(bool(flags) and all(flags)).lower(), "cached_tasks": f"{sum(flags)}/{len(flags)}"}
