"""Shard tasks carry their own I/O: with an s3:// data_root (a moto server), the ingest and extract flows run
their shard tasks on a Dask cluster and on Ray whose workers are separate processes, each with its own
working directory and cache home, as separate machines have. Each shard task pulls its inputs from the
bucket into its own worker's working copy and pushes its output; the flow's working copy gets every shard
from the bucket. What lands in the bucket is byte for byte what a local run (thread pool, local data_root)
writes to its folder."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pyarrow.fs as pafs
import pytest

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data import mirror
from mmcore.data.storage import Storage
from tests.servers import aws_env, moto_server

pytestmark = pytest.mark.slow

BUCKET = "mm-shard-io"
SHARD_SIZE = 20  # 91 records -> 5 shards: enough for both workers to take some
SETS = {"ingest.shard_size": SHARD_SIZE, "orchestration.n_workers": 2}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 synthetic images plus a record whose image is in the first shard: an image duplicate that only
    finish_ingest can see, since the two records go to different shards (tasks)."""
    from mmcore.data.records import ANNOTATIONS
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("raw") / "smoke"
    generate_shapes(root, 90, seed=5, image_size=32)
    first = json.loads((root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()[0])
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**first, "id": "copy-of-first"}) + "\n")
    return root


def _ingest_and_extract(cfg, encoder: Path | None = None) -> Catalog:
    """Ingest, then extract with the encoder at `encoder` (None: a fresh seeded one, saved where pretrain would
    have); with a bucket, the encoder is pushed there first, as the pretrain flow would have."""
    import torch

    from flows.common import with_task_runner
    from flows.extract import extract_flow
    from flows.ingest import ingest_flow
    from mmcore.data.dataset import load_tokenizer
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.training.contrastive import save_encoder

    cat = Catalog.from_config(cfg)
    with_task_runner(ingest_flow, cfg)(cfg, workers=2)
    if encoder is None:  # an untrained encoder is enough to compare two extract runs
        torch.manual_seed(0)
        tok = load_tokenizer(cat.processed)
        save_encoder(build_dual_encoder(cfg.encoder, tok.vocab_size, tok.pad_id), cfg.encoder, tok.vocab_size,
                     cat.pretrain.encoder)
    else:
        mirror.push(encoder.parent, Storage(cat.remote_of(cat.pretrain)), only=[encoder.name])
    with_task_runner(extract_flow, cfg)(cfg)
    return cat


@pytest.fixture(scope="module")
def local(harness, raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The reference: a local data_root on the thread pool, torch on one thread as on each worker below (so the
    float reductions split the same way and the features agree to the bit)."""
    import shutil

    import torch

    root = tmp_path_factory.mktemp("local")
    shutil.copytree(raw, root / "raw" / "smoke")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cat = _ingest_and_extract(load_config("smoke", {**SETS, "data_root": str(root)}))
    finally:
        torch.set_num_threads(threads)
    [run] = _ingest_runs(cat)
    assert run.data.tags["shard_writer_hosts"] == f"{socket.gethostname()}:{os.getpid()}"  # the flow's process
    return cat


def _ingest_runs(cat: Catalog) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("smoke")
    return client.search_runs([exp.experiment_id], f"tags.stage = 'ingest' and tags.processed_dir = '{cat.processed}'")


@pytest.fixture(scope="module")
def bucket(harness) -> Iterator[str]:
    with moto_server() as endpoint, aws_env(endpoint):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"


def _own_home(parent: Path) -> Callable[[], str]:
    """A setup for each worker process: a working directory and cache home of its own (so its own default
    working copy of the bucket), named after the process, as a machine of its own would have."""

    def setup() -> str:
        home = parent / f"{socket.gethostname()}-{os.getpid()}"
        home.mkdir(parents=True)
        os.chdir(home)
        os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
        os.environ.pop("MM_DATA_CACHE", None)
        return str(home)

    return setup


@contextmanager
def _cluster(kind: str, homes: Path) -> Iterator[dict]:
    """Two worker processes of `kind` set up by `_own_home`; yields the settings that send the flows there."""
    if kind == "dask":
        from distributed import Client, LocalCluster

        with (LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
              Client(cluster) as client):
            assert len(set(client.run(_own_home(homes)).values())) == 2
            yield {"orchestration.task_runner": "dask", "orchestration.dask_address": cluster.scheduler_address}
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"worker_process_setup_hook": _own_home(homes)})
    try:
        yield {"orchestration.task_runner": "ray"}  # the flows' Ray task runner uses the running instance
    finally:
        ray.shutdown()


def _tree(files: dict[str, bytes], rel: str) -> dict[str, bytes]:
    return {name[len(rel) + 1:]: data for name, data in files.items() if name.startswith(rel + "/")}


def _local_files(cat: Catalog) -> dict[str, bytes]:
    """Every file of the processed and features folders under a local data root, by path relative to it."""
    return {p.relative_to(cat.root).as_posix(): p.read_bytes() for folder in (cat.processed, cat.features)
            for p in sorted(folder.path.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _bucket_files(root: str, cat: Catalog) -> dict[str, bytes]:
    store = Storage(root)
    every = store.fs.get_file_info(pafs.FileSelector(store.path("processed"), recursive=True))
    assert not [f.path for f in every if ".staging" in f.path]  # the plan's staging files are gone
    return {rel: store.read_bytes(rel) for folder in (cat.processed, cat.features)
            for rel in store.files(Path(folder).relative_to(cat.root).as_posix())}


def _without(manifest: bytes, *keys: str) -> dict:
    data = json.loads(manifest)
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        (data[parent] if parent else data).pop(leaf)
    return data


def _pulls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Local folder -> the files pulled into it in this (the flow's) process; workers are other processes."""
    pulled: dict[str, list[str]] = {}
    real = mirror.pull

    def spy(remote, local, last=(), only=None):
        report = real(remote, local, last, only)
        pulled.setdefault(str(local), []).extend(report.copied)
        return report

    monkeypatch.setattr(mirror, "pull", spy)
    return pulled


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_shard_tasks_on_separate_workers_write_the_bucket_as_a_local_run_writes_its_folder(
        kind: str, local: Catalog, bucket: str, raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    root = f"{bucket}/{kind}"
    mirror.push(raw, Storage(f"{root}/raw/smoke"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "flow" / ".cache"))  # the flow's own machine
    pulled, homes = _pulls(monkeypatch), tmp_path / "workers"
    homes.mkdir()
    started = time.perf_counter()
    with _cluster(kind, homes) as sets:
        cat = _ingest_and_extract(load_config("smoke", {**SETS, **sets, "data_root": root}), local.pretrain.encoder)
    print(f"{kind}: {time.perf_counter() - started:.1f} s")

    # Byte for byte the local run's files, but for where each manifest says its inputs were
    ours, theirs = _local_files(local), _bucket_files(root, cat)
    assert len([n for n in ours if "/samples-" in n]) == 5 and sorted(ours) == sorted(theirs)
    manifests = {n for n in ours if n.endswith(cat.processed.manifest.name)}
    assert {n: ours[n] for n in ours if n not in manifests} == {n: theirs[n] for n in theirs if n not in manifests}
    processed, features = (Path(f).relative_to(cat.root).as_posix() + "/" + cat.processed.manifest.name
                           for f in (cat.processed, cat.features))
    assert _without(ours[processed], "source.uri") == _without(theirs[processed], "source.uri")
    assert json.loads(theirs[processed])["source"]["uri"] == f"{root}/raw/smoke"  # read from the bucket
    assert _without(ours[features], "encoder", "processed") == _without(theirs[features], "encoder", "processed")
    manifest = json.loads(theirs[processed])
    assert manifest["rejects_by_reason"] == {"duplicate": 1} and manifest["accepted"] == 90  # across shards

    # No shared filesystem: every shard reached the flow's working copy by a pull from the bucket (a file the
    # tasks had written there would have been up to date), and was written in a worker's own working copy
    shards = {n.rsplit("/", 1)[1] for n in theirs if "/samples-" in n or "/rejects-" in n}
    assert shards <= set(pulled[str(cat.processed.path)])
    assert sorted(_tree(theirs, Path(cat.features.path).relative_to(cat.root).as_posix())) == sorted(
        set(pulled[str(cat.features.path)]) | {cat.features.manifest.name})
    [run] = _ingest_runs(cat)
    assert run.data.tags["task_runner"] == kind
    writers = run.data.tags["shard_writer_hosts"].split(",")
    assert 1 <= len(writers) <= 2 and f"{socket.gethostname()}:{os.getpid()}" not in writers
    # each writer's own working copy of the bucket holds the rejects it wrote (extract pulls samples, not those)
    flow_copy = Path(cat.root).relative_to(tmp_path / "flow" / ".cache")  # mmcore/s3/<bucket>/<prefix>
    folders = [homes / w.replace(":", "-") / ".cache" / flow_copy / Path(cat.processed.path).relative_to(cat.root)
               for w in writers]
    assert {p.name for f in folders for p in f.glob("rejects-*")} == {n for n in shards if n.startswith("rejects-")}
    written = [p.name for home in homes.iterdir() for p in home.rglob("features-*.parquet")]
    assert sorted(written) == sorted(n for n in pulled[str(cat.features.path)])  # each shard in one worker's copy
    assert not cat.processed.staging.exists()
