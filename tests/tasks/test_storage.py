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


def test_push_some_files_of_a_folder_takes_its_mark_down_first_and_remove_deletes(bucket, tmp_path):
    from mmcore.data import mirror

    remote = Storage(f"{bucket}/only")
    local = _folder(tmp_path / "here")
    mirror.push(local, remote, ("manifest.json",))
    (local / "samples-00000.parquet").write_bytes(b"other rows")
    (local / "tokenizer.json").write_bytes(b'{"vocab": {}}')
    report = mirror.push(local, remote, ("manifest.json",), only=["samples-00000.parquet"])
    assert report.copied == ["samples-00000.parquet"]
    assert remote.files() == ["samples-00000.parquet", "tokenizer.json"]  # the mark no longer vouches for them
    assert remote.read_bytes("tokenizer.json") == b"{}"  # not named: not pushed
    assert mirror.push(local, remote, ("manifest.json",), only=["samples-00000.parquet"]).copied == []

    assert mirror.remove(remote, only=["tokenizer.json", "not-there.json"]) == 1
    assert remote.files() == ["samples-00000.parquet"]
    assert mirror.remove(remote) == 1 and remote.files() == [] and not remote.is_dir()
    assert mirror.remove(remote) == 0  # nothing there: no error


def test_a_shard_task_works_in_the_working_copy_of_its_own_process(tmp_path, config_at):
    from mmcore.catalog import Catalog
    from tasks.storage import own_copy

    local = Catalog.from_config(config_at(tmp_path / "data"))
    assert own_copy(config_at(tmp_path / "data"), local) is local
    flow = Catalog.from_config(config_at("s3://b/p", data_cache=str(tmp_path / "flow")))
    worker = own_copy(config_at("s3://b/p", data_cache=str(tmp_path / "worker")), flow)  # as another machine
    assert worker.root == tmp_path / "worker" and worker.processed.path == tmp_path / "worker" / Path(
        flow.processed.path).relative_to(flow.root)
    assert (worker.remote_root, worker.ingest_key, worker.pretrain_key) == (
        flow.remote_root, flow.ingest_key, flow.pretrain_key)


def _flow_and_worker(bucket: str, tmp_path: Path, config_at, name: str) -> tuple:
    """The config and catalog of a flow, and the config of a worker on another machine, on `bucket`/`name`."""
    from mmcore.catalog import Catalog

    cfg = config_at(f"{bucket}/{name}", data_cache=str(tmp_path / "flow"))
    return cfg, Catalog.from_config(cfg), config_at(f"{bucket}/{name}", data_cache=str(tmp_path / "worker"))


@pytest.mark.filterwarnings("ignore:Logger .prefect.task_runs. attempted to send logs")  # tasks outside a flow
@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")  # finish's rejects table
def test_ingest_shard_tasks_elsewhere_get_the_plan_from_the_store_and_push_their_shards(
        bucket, built, tmp_path, run_log, config_at, mlflow_run):
    from mmcore.catalog import Catalog
    from mmcore.data import mirror
    from tasks import ingest as T

    cfg, flow, worker_cfg = _flow_and_worker(bucket, tmp_path, config_at, "ingest")
    mirror.push(built.cat.raw, Storage(flow.raw_uri))
    planned = T.plan.fn(cfg, flow)
    T.share(flow, planned)
    shards = [T.ingest_shard.fn(planned.path, work, 1, None, worker_cfg, flow) for work in planned.work]
    worker, names = Catalog.from_config(worker_cfg), ["samples-00000.parquet", "samples-00001.parquet"]
    assert [s.samples_path for s in shards] == [str(flow.processed.path / n) for n in names]  # the flow's, later
    assert sorted(p.name for p in worker.processed.path.glob("samples-*")) == names  # written in its own copy
    assert not list(flow.processed.path.glob("samples-*"))  # not in the flow's
    assert not (worker.root / Path(planned.stage).relative_to(flow.root)).exists()  # the plan in scratch space
    T.collect(flow, planned, shards)
    result = T.finish.fn(cfg, flow, planned.path, shards, mlflow_run.id)
    assert result.digest == built.result.ingest.digest  # the same bytes as a local run's
    for name in names:
        assert (flow.processed.path / name).read_bytes() == (built.cat.processed.path / name).read_bytes()


@pytest.mark.filterwarnings("ignore:Logger .prefect.task_runs. attempted to send logs")
def test_an_extract_shard_task_elsewhere_pulls_its_inputs_and_pushes_its_feature_shard(
        bucket, built, tmp_path, run_log, config_at):
    from mmcore.catalog import Catalog
    from mmcore.data import mirror
    from tasks import extract as T

    _, flow, worker_cfg = _flow_and_worker(bucket, tmp_path, config_at, "extract")
    for folder in (built.cat.processed, built.cat.pretrain):
        mirror.push(folder, Storage(flow.remote_of(flow.root / Path(folder).relative_to(built.cat.root))))
    shard = T.extract_shard.fn(worker_cfg, flow, 1)
    worker = Catalog.from_config(worker_cfg)
    assert (shard.path, shard.rows, shard.reused) == (flow.features.shard(1), 20, False) and not shard.path.exists()
    assert sorted(p.name for p in worker.processed.path.iterdir()) == ["samples-00001.parquet",
                                                                       "tokens-00001.parquet"]  # its inputs only
    expected = built.cat.features.shard(1).read_bytes()  # the same encoder on the same shard: the same bytes
    assert worker.features.shard(1).read_bytes() == expected
    assert Storage(flow.remote_of(flow.features)).read_bytes(shard.path.name) == expected
    T.collect(flow, [1])
    assert flow.features.shard(1).read_bytes() == expected
    assert f"delivered {shard.path.name}, 0.2 MB, to {flow.remote_of(flow.features)}" in run_log()
