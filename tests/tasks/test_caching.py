"""The stages' Prefect cache keys: the stage's input digests, its own code version and its output
location, never the MLflow run id; a cached result is used only while its files exist and are intact."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import flows  # noqa: F401  (the embedded defaults, set before Prefect is imported)
from tasks import caching

REPO = Path(caching.__file__).resolve().parent.parent


def _rel(paths: tuple[Path, ...]) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in paths}


def test_pretraining_code_is_the_training_code_and_not_the_report_or_the_evaluation():
    files = _rel(caching.code_files("mmcore.stages.pretrain"))
    assert {"mmcore/stages/pretrain.py", "mmcore/training/loop.py", "mmcore/catalog.py", "mmcore/config.py",
            "mmcore/stages/__init__.py", "mmcore/__init__.py"} <= files
    assert "mmcore/report.py" not in files and not any(f.startswith("mmcore/evaluation/") for f in files)
    assert not any(f.startswith(("tasks/", "flows/")) for f in files)
    evaluate = _rel(caching.code_files("mmcore.stages.evaluate"))
    assert "mmcore/evaluation/retrieval.py" in evaluate and "mmcore/report.py" not in evaluate


@pytest.fixture()
def code_copy(tmp_path, monkeypatch):
    """A copy of the mmcore sources that `code_version` reads instead of the real ones (caches cleared)."""
    shutil.copytree(REPO / "mmcore", tmp_path / "mmcore", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(caching, "_ROOT", tmp_path)
    caching.code_files.cache_clear()
    caching._code_version.cache_clear()
    yield tmp_path / "mmcore"
    caching.code_files.cache_clear()
    caching._code_version.cache_clear()


def _versions() -> dict[str, str]:
    caching.code_files.cache_clear()
    caching._code_version.cache_clear()
    return {stage: caching.code_version(stage) for stage in ("ingest", "pretrain", "extract", "train", "evaluate")}


def test_an_edit_changes_the_code_version_of_the_stages_that_run_it(code_copy):
    before = _versions()
    assert len(set(before.values())) == 5  # each stage has its own
    with open(code_copy / "report.py", "a", encoding="utf-8") as fh:
        fh.write("\n# a new report column\n")
    assert _versions() == before  # no stage runs the report
    with open(code_copy / "evaluation" / "retrieval.py", "a", encoding="utf-8") as fh:
        fh.write("\n# a faster recall\n")
    after = _versions()
    assert after["evaluate"] != before["evaluate"]
    assert {s: after[s] for s in before if s != "evaluate"} == {s: before[s] for s in before if s != "evaluate"}
    with open(code_copy / "training" / "loop.py", "a", encoding="utf-8") as fh:
        fh.write("\n# a changed training loop\n")
    trained = _versions()
    assert all(trained[s] != after[s] for s in ("pretrain", "extract", "train", "evaluate"))
    assert trained["ingest"] == after["ingest"]  # ingest trains nothing


def test_cache_key_follows_inputs_code_and_location_but_not_the_run_id(built, data_copy, config_at, monkeypatch):
    from mmcore.catalog import Catalog
    from tasks.pretrain import pretrain
    from tasks.train import train

    def key(task, cfg, cat, run_id="run-a"):
        return task.cache_key_fn(None, {"cfg": cfg, "cat": cat, "run_id": run_id})

    cfg, cat = built.cfg, built.cat
    base = key(pretrain, cfg, cat)
    assert base.startswith("mm-pretrain-") and base == key(pretrain, cfg, cat, "run-b")  # where it logs: no part
    assert base != key(train, cfg, cat)  # each stage its own key
    moved_cfg, moved = data_copy("processed")  # the same dataset in another data root: another output location
    assert moved.processed.digest() == cat.processed.digest()
    assert key(pretrain, moved_cfg, moved) != base
    lr = config_at(built.root, **{"pretrain.lr": 0.01})  # a setting the encoder depends on
    assert key(pretrain, lr, Catalog.from_config(lr)) != base
    assert key(pretrain, config_at(built.root, **{"pretrain.log_every_steps": 5}), cat) == base  # reporting only
    monkeypatch.setattr(caching, "code_version", lambda stage: "edited-" + stage)
    assert key(pretrain, cfg, cat) != base


def test_check_refresh_and_run_tags():
    assert caching.check_refresh(["all"]) == list(caching.STAGES) == ["pretrain", "extract", "train", "evaluate"]
    assert caching.check_refresh(["train", "evaluate"]) == ["train", "evaluate"]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['pretrian'\]"):
        caching.check_refresh(["pretrian"])
    assert caching.cached_tags(True) == {"cached": "true", "cached_tasks": "1/1"}
    assert caching.cached_tags([True, False]) == {"cached": "false", "cached_tasks": "1/2"}
    assert caching.cached_tags([]) == {"cached": "false", "cached_tasks": "0/0"}


@dataclass(frozen=True)
class Made:
    path: Path

    @property
    def outputs(self) -> list[Path]:
        return [self.path]


def test_a_cached_result_whose_files_are_gone_runs_again(harness, tmp_path):
    from prefect import flow, task

    out = tmp_path / "made.txt"
    calls = []

    @task(cache_key_fn=caching.keyed_on("train", lambda p: {"x": p["x"], "out": str(out)}), persist_result=True)
    def make(x: int) -> Made:
        calls.append(x)
        out.write_text(str(x))
        return Made(out)

    @flow
    def run() -> list[bool]:
        seen = []
        for _ in range(2):
            result, cached = caching.run_cached(make, 7)
            assert result == Made(out)
            seen.append(cached)
        out.unlink()
        _, cached = caching.run_cached(make, 7)
        return [*seen, cached]

    assert run() == [False, True, False]
    assert calls == [7, 7] and out.read_text() == "7"


def test_mapped_results_whose_files_are_gone_run_again(harness, tmp_path):
    from prefect import flow, task

    calls = []

    @task(cache_key_fn=caching.keyed_on("extract", lambda p: {"out": str(tmp_path / p["name"])}), persist_result=True)
    def make(name: str) -> Made:
        calls.append(name)
        (tmp_path / name).write_text(name)
        return Made(tmp_path / name)

    @flow
    def run(names: list[str]) -> list[bool]:
        results, cached = caching.map_cached(make.map(names), lambda i: make.with_options(refresh_cache=True)(names[i]))
        assert results == [Made(tmp_path / n) for n in names]
        return cached

    assert run(["a", "b"]) == [False, False]
    (tmp_path / "b").unlink()
    assert run(["a", "b"]) == [True, False]
    assert sorted(calls) == ["a", "b", "b"] and (tmp_path / "b").read_text() == "b"


@dataclass(frozen=True)
class Digested:
    """A result that records the sha256 of the file it stands for, as the stage results do."""

    path: Path
    sha256: str

    @property
    def outputs(self) -> dict[Path, str]:
        return {self.path: self.sha256}


def test_usable_checks_the_recorded_digest_or_else_the_kind_of_file(tmp_path):
    from mmcore.io import file_sha256

    out = tmp_path / "made.json"
    out.write_text('{"rows": 5}')
    good = Digested(out, file_sha256(out))
    assert caching.usable(good) and caching.usable(Made(out)) and caching.problems(good) == {}
    out.write_text('{"rows": 6}')  # whole, but not the file the result stands for
    assert not caching.usable(good) and caching.usable(Made(out))
    assert caching.problems(good)[out].startswith("sha256 ")
    out.write_text('{"rows"')  # truncated: no digest needed to tell
    assert not caching.usable(Made(out)) and caching.problems(Made(out))[out].startswith("JSONDecodeError")
    assert caching.usable(object())  # a result that stands for no file


def test_a_cached_result_whose_file_is_corrupt_runs_again_with_a_warning(harness, tmp_path, run_log):
    from prefect import flow, task

    from mmcore.io import file_sha256

    out = tmp_path / "made.txt"
    calls = []

    @task(cache_key_fn=caching.keyed_on("train", lambda p: {"x": p["x"], "out": str(out)}), persist_result=True)
    def make(x: int) -> Digested:
        calls.append(x)
        out.write_text(str(x) * 1000)
        return Digested(out, file_sha256(out))

    @flow
    def run() -> list[bool]:
        seen = [caching.run_cached(make, 7)[1]]
        seen.append(caching.run_cached(make, 7)[1])
        out.write_text("7" * 500)  # truncated
        seen.append(caching.run_cached(make, 7)[1])
        return seen

    assert run() == [False, True, False]
    assert calls == [7, 7] and out.read_text() == "7" * 1000
    warned = [line for line in run_log() if "stands for" in line]
    assert len(warned) == 1 and warned[0].startswith(f"the cached result of make stands for {out}, which is corrupt "
                                                     "(sha256 ") and warned[0].endswith(": running it again")


def test_mapped_results_whose_files_are_corrupt_run_again_with_a_warning(harness, tmp_path, run_log):
    from prefect import flow, task

    from mmcore.io import file_sha256

    calls = []

    @task(cache_key_fn=caching.keyed_on("extract", lambda p: {"out": str(tmp_path / p["name"])}), persist_result=True)
    def make(name: str) -> Digested:
        calls.append(name)
        (tmp_path / name).write_text(name * 100)
        return Digested(tmp_path / name, file_sha256(tmp_path / name))

    @flow
    def run(names: list[str]) -> list[bool]:
        _, cached = caching.map_cached(make.map(names), lambda i: make.with_options(refresh_cache=True)(names[i]))
        return cached

    assert run(["a", "b"]) == [False, False]
    (tmp_path / "b").write_text("b" * 10)
    assert run(["a", "b"]) == [True, False]
    assert sorted(calls) == ["a", "b", "b"] and (tmp_path / "b").read_text() == "b" * 100
    warned = [line for line in run_log() if "stands for" in line]
    assert len(warned) == 1 and warned[0].startswith(f"the cached result of mapped task 1 stands for {tmp_path / 'b'}")
