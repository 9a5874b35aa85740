"""Fixtures of the task tests: every stage run once per session on 60 synthetic images (the library's own
`mmcore.stages.pipeline.run`, no Prefect), copies of its data root for tests that write, MLflow runs to
log into, and the lines tasks log through `get_run_logger`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.stages.pipeline import PipelineResult

SETS = {"pretrain.epochs": 1, "heads.epochs": 1, "heads.text_epochs": 1}


def smoke_config(data_root: str | Path, **sets: object) -> PipelineConfig:
    """The smoke preset, one epoch per model, on `data_root` (a folder or s3:// URI; plus any dotted `sets`)."""
    return load_config("smoke", {"data_root": str(data_root), **SETS, **sets})


@dataclass(frozen=True)
class Built:
    root: Path
    cfg: PipelineConfig
    cat: Catalog
    result: PipelineResult


@pytest.fixture(scope="session")
def built(smoke_stages) -> Built:
    """Every stage run once, in this process (the session's `smoke_stages`; read-only for tests: `data_copy`
    gives a copy to write to)."""
    cfg, cat, result = smoke_stages
    assert cfg == smoke_config(cat.root)  # the settings the copies below are made with
    return Built(cat.root, cfg, cat, result)


@pytest.fixture()
def data_copy(built: Built, tmp_path: Path) -> Callable[..., tuple[PipelineConfig, Catalog]]:
    """`copy(*folders)`: a new data root holding the raw dataset and the built stage folders named
    ("processed", "pretrain", "features", "heads"); returns its config and catalog (same keys as `built`)."""

    def copy(*folders: str) -> tuple[PipelineConfig, Catalog]:
        root = tmp_path / "data"
        cfg = smoke_config(root)
        cat = Catalog.from_config(cfg)
        shutil.copytree(built.cat.raw, cat.raw)
        for name in folders:
            shutil.copytree(getattr(built.cat, name).path, getattr(cat, name).path)
        return cfg, cat

    return copy


class LoggedRun:
    """An MLflow run a task logs into (`id`), and what it holds, read back from the store."""

    def __init__(self, run_id: str):
        self.id = run_id

    def _run(self):
        from tasks import tracking

        return tracking.client().get_run(self.id)

    def metrics(self) -> dict[str, float]:
        return self._run().data.metrics

    def tags(self) -> dict[str, str]:
        return self._run().data.tags

    def history(self, metric: str) -> list[tuple[int, float]]:
        """(step, value) of every value logged for `metric`, by step."""
        from tasks import tracking

        return sorted((m.step, m.value) for m in tracking.client().get_metric_history(self.id, metric))

    def artifacts(self, path: str | None = None) -> list[str]:
        from tasks import tracking

        return sorted(a.path for a in tracking.client().list_artifacts(self.id, path))

    def load_dict(self, path: str) -> object:
        import mlflow

        return mlflow.artifacts.load_dict(f"runs:/{self.id}/{path}")

    def datasets(self) -> list[tuple[str, str, set[str]]]:
        """(name, digest, context tags) of each dataset the run consumed."""
        inputs = self._run().inputs.dataset_inputs
        return [(i.dataset.name, i.dataset.digest, {t.value for t in i.tags}) for i in inputs]


@pytest.fixture()
def mlflow_run(harness) -> Iterator[LoggedRun]:
    """A fresh MLflow run (in the session's embedded store) for a task to log into; finished afterwards."""
    from tasks import tracking

    run_id = tracking.start_run(load_config("smoke"), "test")
    yield LoggedRun(run_id)
    tracking.end_run(run_id)


@pytest.fixture()
def run_log(harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Lets tasks run outside a flow with their `get_run_logger()` lines captured; returns a function that
    gives the lines logged so far."""
    import prefect.logging

    import tasks.ingest
    import tasks.storage

    logger = logging.getLogger("tests.run_log")
    for module in (prefect.logging, tasks.ingest, tasks.storage):  # tracking.RunHooks imports it from prefect.logging
        monkeypatch.setattr(module, "get_run_logger", lambda: logger)
    caplog.set_level(logging.INFO, logger=logger.name)
    return lambda: [r.getMessage() for r in caplog.records if r.name == logger.name]


@pytest.fixture()
def config_at() -> Callable[..., PipelineConfig]:
    """`config_at(data_root, **dotted sets)`: the fixture's config (smoke, one epoch per model) elsewhere."""
    return smoke_config
