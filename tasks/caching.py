"""Prefect caching of the model stages: the one place that decides when a stage's earlier result is used.

A stage task's cache key is a digest of
  - what determines its output: the stage's `inputs(cfg, cat)` (mmcore/stages), made of the catalog's
    content digests (dataset and features manifests, checkpoint files), the config sections the stage
    depends on and where it writes;
  - the code version of that stage: a digest of the sources of the stage's module and of every mmcore
    module it imports, directly or not. Editing the evaluation report does not touch pretraining's key;
    editing the training loop changes every stage that trains.
Arguments that only say where to log (an MLflow run id) are not part of it. A cached result is used
only while the files it stands for (`result.outputs`: path -> the sha256 it had when written, or a plain
list of paths) are intact, as `mmcore.integrity` checks them (the same sha256; else a Parquet footer that
reads, a torch file that loads, JSON that parses); otherwise a warning in the flow's run log names the file
and the task runs again (cache refreshed) and replaces the entry. One rule for single and mapped tasks.
`refresh` (the CLI's `--refresh STAGE`) forces a stage to run.

Results are persisted by Prefect (`persist_result=True`) under `PREFECT_LOCAL_STORAGE_PATH` (by default
`$PREFECT_HOME/storage`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import prefect.logging
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture

from mmcore import integrity

STAGES = ("pretrain", "extract", "train", "evaluate")
CACHE_EXPIRATION = timedelta(days=30)
_MODULE_NAME = re.compile(r"^mmcore(\.\w+)+")  # also modules named in strings (the source readers' registry)


_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the mmcore package


def _source(module: str) -> Path | None:
    """The file of an mmcore module or package, found on disk (nothing is imported); None if there is none
    (a name imported from a module, not a module)."""
    path = _ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """The mmcore modules a source file imports anywhere in it (mmcore imports absolutely), or names as a
    string; `from a import b` counts both a and a.b, since b may be a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := _MODULE_NAME.match(node.value)):
            found.add(m.group(0))
    return {name for name in found if name.split(".")[0] == "mmcore"}


@cache
def code_files(module: str) -> tuple[Path, ...]:
    """The source files of `module` and of every mmcore module (and package __init__) it reaches."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):  # packages run their __init__
            if parent in seen or (path := _source(parent)) is None:
                continue
            seen[parent] = path
            todo.extend(_imports(path))
    return tuple(sorted(set(seen.values())))


def code_version(stage: str) -> str:
    """Digest of the code stage `stage` runs (mmcore/stages/<stage>.py and what it imports), read once per
    process: the per-shard tasks of one run, on several threads, all get the same key even if a file is
    edited meanwhile."""
    with _VERSIONS_LOCK:
        return _code_version(stage)


_VERSIONS_LOCK = threading.Lock()


@cache
def _code_version(stage: str) -> str:
    h = hashlib.sha256()
    for path in code_files(f"mmcore.stages.{stage}"):
        h.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """The cache key of `stage` from the digests and values that determine its output."""
    payload = json.dumps({"stage": stage, "code": code_version(stage), **inputs}, sort_keys=True, default=str)
    return f"mm-{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def keyed_on(stage: str, inputs: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., str]:
    """A Prefect `cache_key_fn`: `inputs(task parameters)` gives the stage's input digests."""
    return lambda _context, parameters: stage_key(stage, inputs(parameters))


def check_refresh(refresh: Iterable[str]) -> list[str]:
    """The stages `--refresh` names, with `all` expanded; an unknown name is an error, not a no-op."""
    names = list(STAGES) if "all" in refresh else list(refresh)
    unknown = sorted(set(names) - set(STAGES))
    if unknown:
        raise ValueError(f"--refresh names unknown stage(s) {unknown}; choose from {[*STAGES, 'all']}")
    return names


def problems(result: Any) -> dict[Path, str]:
    """path -> why, for each file a cached result stands for that is missing or corrupt."""
    return integrity.problems(getattr(result, "outputs", []))


def usable(result: Any) -> bool:
    """Whether a cached result can stand for a run: every file it stands for is there and intact."""
    return not problems(result)


def _unusable(what: str, result: Any) -> bool:
    """Whether a cached result must be made again; warns (run log) naming each file that is not intact."""
    found = problems(result)
    for path, why in found.items():
        state = "missing" if why == "missing" else f"corrupt ({why})"
        _warn(f"{what} stands for {path}, which is {state}: running it again")
    return bool(found)


def _warn(message: str) -> None:
    """A warning in the run log of the flow (or task) run; a Python warning outside of one."""
    try:
        prefect.logging.get_run_logger().warning("%s", message)
    except MissingContextError:
        warnings.warn(message, integrity.CorruptOutputWarning, stacklevel=3)


def run_cached(task: Any, *args: Any, refresh: bool = False, timeout: float | None = None,
               **kwargs: Any) -> tuple[Any, bool]:
    """Calls a cached stage task; returns its result and whether it came from the cache.

    A cached result that is not `usable` is made again. `timeout` (seconds) fails the task run with a
    TaskRunTimeoutError when it takes longer.
    """
    state = task.with_options(refresh_cache=refresh, timeout_seconds=timeout)(*args, return_state=True, **kwargs)
    result, cached = state.result(), state.name == "Cached"
    if cached and _unusable(f"the cached result of {task.name}", result):
        state = task.with_options(refresh_cache=True, timeout_seconds=timeout)(*args, return_state=True, **kwargs)
        result, cached = state.result(), False
    return result, cached


def map_cached(futures: list[PrefectFuture], rerun: Callable[[int], Any]) -> tuple[list[Any], list[bool]]:
    """The results of mapped stage tasks and which came from the cache; `rerun(i)` runs item i again (with
    its cache refreshed, and without reading the output it replaces) when its cached result is not usable."""
    results, cached = [f.result() for f in futures], [f.state.name == "Cached" for f in futures]
    for i, result in enumerate(results):
        if cached[i] and _unusable(f"the cached result of mapped task {i}", result):
            results[i], cached[i] = rerun(i), False
    return results, cached


def timeout_seconds(cfg: Any) -> float | None:
    """The per-task time limit `orchestration.timeout_minutes` sets, in seconds."""
    minutes = cfg.orchestration.timeout_minutes
    return None if minutes is None else 60.0 * minutes


def cached_tags(cached: bool | list[bool]) -> dict[str, str]:
    """The tag a stage's MLflow run gets: `cached` true when no task of the stage did any work."""
    flags = cached if isinstance(cached, list) else [cached]
    return {"cached": str(bool(flags) and all(flags)).lower(), "cached_tasks": f"{sum(flags)}/{len(flags)}"}
