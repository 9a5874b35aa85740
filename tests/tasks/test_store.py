"""The embedded MLflow store: created and migrated once under a lock, and repaired when an interrupted
migration left a leftover table, or named in a one-line error when it cannot be."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks import store

REPO = Path(__file__).resolve().parents[2]


def _half_migrated(path: Path, leftover: str = "_alembic_tmp_latest_metrics") -> None:
    """A store an older run left mid-migration: schema at revision a8c4a736bde6, and the leftover table the
    next migration step creates first (what two processes migrating at once leave behind)."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    url = f"sqlite:///{path}"
    engine = sqlalchemy.create_engine(url)
    Base.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "a8c4a736bde6")
    engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {leftover} (x INTEGER)")


def test_a_half_migrated_store_is_repaired_and_migrated(tmp_path):
    path = tmp_path / "mlflow.db"
    _half_migrated(path)
    with pytest.raises(Exception, match="_alembic_tmp_latest_metrics already exists"):  # what MLflow alone does
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    store.ensure(f"sqlite:///{path}")
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment = client.create_experiment("after-repair")
    assert client.get_experiment(experiment).name == "after-repair"
    with sqlite3.connect(path) as db:
        assert not [r for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'")]


def test_a_leftover_without_its_table_is_named_in_one_line(tmp_path):
    path = tmp_path / "mlflow.db"
    _half_migrated(path, leftover="_alembic_tmp_gone_table")
    with pytest.raises(store.BrokenStore) as exc:
        store.ensure(f"sqlite:///{path}")
    assert str(exc.value).startswith(f"the MLflow store {path} was left half-migrated (_alembic_tmp_gone_table")
    assert f"mv {path} {path}.broken" in str(exc.value) and "\n" not in str(exc.value)


def test_processes_that_open_a_new_store_at_once_all_succeed(tmp_path):
    code = ("import sys\nfrom tasks import store\nfrom mlflow.tracking import MlflowClient\n"
            f"uri = 'sqlite:///{tmp_path / 'mlflow.db'}'\nstore.ensure(uri)\n"
            "print(len(MlflowClient(tracking_uri=uri).search_experiments()))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(err[-1500:] for _, err in outs)
    assert [out.strip() for out, _ in outs] == ["1"] * 4  # the Default experiment, created once
