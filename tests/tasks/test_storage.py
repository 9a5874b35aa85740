"""The storage tasks against a real S3-compatible server (moto, on 127.0.0.1): push a folder, pull it into
an empty working copy (whole, or only some files), and copy nothing that is already up to date."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mmcore.data.storage import Storage
from tests.servers import aws_env, moto_server

BUCKET = "mm-task-storage"
FILES = {"samples-00000.parquet": b"rows" * 100, "tokenizer.json": b"{}", "manifest.json": b'{"shards": []}'}


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    with moto_server() as endpoint, aws_env(endpoint):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, data in FILES.items():
        (path / name).write_bytes(data)
    (path / ".lock").write_bytes(b"")  # hidden files are never copied
    return path


def test_push_then_pull_a_folder(bucket, tmp_path, run_log):
    from tasks.storage import pull_folder, push_folder

    remote = f"{bucket}/push-pull"
    local = _folder(tmp_path / "here")
    assert push_folder.fn(str(local), remote, ("manifest.json",)) == 3
    assert sorted(Storage(remote).files()) == sorted(FILES)
    assert push_folder.fn(str(local), remote, ("manifest.json",)) == 0  # up to date: nothing copied
    assert run_log() == [f"pushed 3 file(s), 0.0 MB, to {remote} (0 up to date)",
                         f"pushed 0 file(s), 0.0 MB, to {remote} (3 up to date)"]

    there = tmp_path / "there"
    assert pull_folder.fn(remote, str(there), ("manifest.json",)) == 3
    assert {p.name: p.read_bytes() for p in there.iterdir()} == FILES
    assert pull_folder.fn(remote, str(there), ("manifest.json",)) == 0
    only = tmp_path / "only"
    assert pull_folder.fn(remote, str(only), ("manifest.json",), ["manifest.json"]) == 1
    assert [p.name for p in only.iterdir()] == ["manifest.json"]
    assert run_log()[2:] == [f"pulled 3 file(s), 0.0 MB, from {remote} (0 up to date)",
                             f"pulled 0 file(s), 0.0 MB, from {remote} (3 up to date)",
                             f"pulled 1 file(s), 0.0 MB, from {remote} (0 up to date)"]


@pytest.mark.filterwarnings("ignore:Logger .prefect.task_runs. attempted to send logs")  # tasks outside a flow
def test_stage_folders_go_through_the_store_only_when_data_root_is_one(bucket, tmp_path, run_log, config_at):
    from mmcore.catalog import Catalog
    from tasks import storage

    local = Catalog.from_config(config_at(tmp_path / "local"))
    _folder(local.processed.path)
    storage.push(local, local.processed)  # a local data_root: nothing to copy, no task runs
    storage.pull(local, local.processed)
    assert run_log() == []

    mine = Catalog.from_config(config_at(f"{bucket}/stages", data_cache=str(tmp_path / "cache-a")))
    _folder(mine.processed.path)
    storage.push(mine, mine.processed)  # runs the push task
    remote = f"{bucket}/stages/{mine.processed.path.relative_to(mine.root).as_posix()}"
    assert run_log() == [f"pushed 3 file(s), 0.0 MB, to {remote} (0 up to date)"]
    rel = mine.processed.path.relative_to(mine.root).as_posix()
    assert sorted(Storage(f"{bucket}/stages/{rel}").files()) == sorted(FILES)
    other = Catalog.from_config(config_at(f"{bucket}/stages", data_cache=str(tmp_path / "cache-b")))
    storage.pull(other, other.processed, other.features)  # features: nothing in the store yet
    assert {p.name: p.read_bytes() for p in other.processed.path.iterdir()} == FILES
    assert not other.features.path.exists() or not any(other.features.path.iterdir())
    assert run_log()[1] == f"pulled 3 file(s), 0.0 MB, from {remote} (0 up to date)"
