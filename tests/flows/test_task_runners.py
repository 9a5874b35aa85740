"""Task runners: the ingest and extract flows write the same shards on a Dask LocalCluster (2 worker
processes) and on a local Ray instance as on the default thread pool;
a runner whose extra is missing says which one to install."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmcore.config import load_config
from mmcore.data.shards import vector_lists_to_numpy, vectors_to_numpy

pytestmark = pytest.mark.slow

SHARD_SIZE = 20  # 91 records -> 5 shards: enough for both Dask workers to take some


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 synthetic images plus a record whose image is in the first shard: an image duplicate that only
    finish_ingest can see, since the two records go to different shards (tasks)."""
    from mmcore.data.records import ANNOTATIONS
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("raw") / "shapes"
    generate_shapes(root, 90, seed=5, image_size=32)
    first = json.loads((root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()[0])
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**first, "id": "copy-of-first"}) + "\n")
    return root


def _overrides(root: Path, raw: Path, runner: str) -> dict:
    return {"data_root": str(root), "ingest.source": str(raw), "ingest.shard_size": SHARD_SIZE,
            "orchestration.task_runner": runner, "orchestration.n_workers": 2}


def _run_ingest_and_extract(root: Path, raw: Path, runner: str, encoder: Path | None) -> tuple:
    """Ingest, then extract with `encoder` (None: a fresh seeded one, saved for the next run). Returns the
    catalog, the encoder used, and the ingest stage's MLflow run."""
    import torch
    from mlflow.tracking import MlflowClient

    from flows.common import with_task_runner
    from flows.extract import extract_flow
    from flows.ingest import ingest_flow
    from mmcore.catalog import Catalog
    from mmcore.data.dataset import load_tokenizer
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.training.contrastive import save_encoder

    cfg = load_config("smoke", _overrides(root, raw, runner))
    cat = Catalog.from_config(cfg)
    with_task_runner(ingest_flow, cfg)(cfg, workers=2)
    target = cat.pretrain.encoder
    target.parent.mkdir(parents=True, exist_ok=True)
    if encoder is None:  # an untrained encoder is enough to compare two extract runs
        torch.manual_seed(0)
        tok = load_tokenizer(cat.processed)
        save_encoder(build_dual_encoder(cfg.encoder, tok.vocab_size, tok.pad_id), cfg.encoder, tok.vocab_size, target)
    else:
        shutil.copyfile(encoder, target)
    with_task_runner(extract_flow, cfg)(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("smoke")
    [run] = client.search_runs([exp.experiment_id], f"tags.stage = 'ingest' and tags.processed_dir = '{cat.processed}'")
    return cat, target, run


def _parquet_files(folder: os.PathLike[str]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.parquet"))}


def test_dask_cluster_writes_the_same_shards_as_threads(harness, raw, tmp_path):
    import time

    started = time.perf_counter()
    threads, encoder, threads_run = _run_ingest_and_extract(tmp_path / "threads", raw, "threads", None)
    mid = time.perf_counter()
    dask, _, dask_run = _run_ingest_and_extract(tmp_path / "dask", raw, "dask", encoder)
    print(f"threads: {mid - started:.1f} s, dask: {time.perf_counter() - mid:.1f} s")

    # Samples, rejects and tokens: same names, same bytes; the manifests agree on the dataset digest
    samples = _parquet_files(threads.processed)
    assert len([n for n in samples if n.startswith("samples-")]) == 5
    assert samples == _parquet_files(dask.processed)
    manifest = json.loads(threads.processed.manifest.read_text())
    assert manifest["digest"] == json.loads(dask.processed.manifest.read_text())["digest"]
    # the cross-shard image duplicate was found although its two records were ingested by different tasks
    assert manifest["rejects_by_reason"] == {"duplicate": 1} and manifest["accepted"] == 90
    # Features: same rows, same vectors up to float rounding (a Dask worker runs torch on 1 thread, the
    # flow's process on 2: reductions split differently, so the last bits may differ)
    features = [p.name for p in threads.features.listed()]
    assert len(features) == 5 and features == [p.name for p in dask.features.listed()]
    for name in features:
        a, b = pq.read_table(threads.features.path / name), pq.read_table(dask.features.path / name)
        assert a.schema == b.schema and a.num_rows == b.num_rows, name
        for column in ("sample_id", "split", "caption_langs"):
            assert a[column].equals(b[column]), (name, column)
        for column in ("image_embedding", "image_pooled", "image_grid"):
            np.testing.assert_allclose(vectors_to_numpy(a[column]), vectors_to_numpy(b[column]), atol=1e-5)
        for x, y in zip(vector_lists_to_numpy(a["text_embeddings"]), vector_lists_to_numpy(b["text_embeddings"]),
                        strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    t_manifest = json.loads(threads.features.manifest.read_text())
    d_manifest = json.loads(dask.features.manifest.read_text())
    assert t_manifest["rows"] == d_manifest["rows"] == 90
    assert t_manifest["processed_digest"] == d_manifest["processed_digest"] == manifest["digest"]
    # Where the shards were written: the flow's own process with threads, the cluster's workers with Dask
    assert threads_run.data.tags["task_runner"] == "threads" and dask_run.data.tags["task_runner"] == "dask"
    here = {f"{w.split(':')[0]}:{os.getpid()}" for w in threads_run.data.tags["shard_writer_hosts"].split(",")}
    assert threads_run.data.tags["shard_writer_hosts"].split(",") == sorted(here)
    dask_writers = dask_run.data.tags["shard_writer_hosts"].split(",")
    assert dask_writers and not set(dask_writers) & here
    assert 1 <= dask_run.data.metrics["shard_writers"] <= 2
    assert not threads.processed.staging.exists() and not dask.processed.staging.exists()


def test_ray_cluster_writes_the_same_shards_as_threads(harness, raw, tmp_path):
    """The same comparison on a local Ray instance (2 CPUs): ingest and extract tasks run as Ray tasks."""
    threads, encoder, threads_run = _run_ingest_and_extract(tmp_path / "threads", raw, "threads", None)
    ray, _, ray_run = _run_ingest_and_extract(tmp_path / "ray", raw, "ray", encoder)
    samples = _parquet_files(threads.processed)
    assert len([n for n in samples if n.startswith("samples-")]) == 5 and samples == _parquet_files(ray.processed)
    manifest = json.loads(ray.processed.manifest.read_text())
    assert manifest["rejects_by_reason"] == {"duplicate": 1} and manifest["accepted"] == 90
    assert json.loads(ray.features.manifest.read_text())["rows"] == 90
    assert ray_run.data.tags["task_runner"] == "ray"
    here = {f"{w.split(':')[0]}:{os.getpid()}" for w in threads_run.data.tags["shard_writer_hosts"].split(",")}
    assert not set(ray_run.data.tags["shard_writer_hosts"].split(",")) & here  # written by Ray's workers


def test_task_runner_builds_each_kind():
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.common import task_runner

    runner = task_runner(load_config("smoke", {"orchestration.max_workers": 3}))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    from prefect_dask import DaskTaskRunner
    from prefect_ray import RayTaskRunner

    dask = task_runner(load_config("smoke", {"orchestration.task_runner": "dask"}))
    assert isinstance(dask, DaskTaskRunner) and dask.address is None  # a LocalCluster for the flow run
    assert {k: dask.cluster_kwargs[k] for k in ("n_workers", "processes", "threads_per_worker")} == {
        "n_workers": 2, "processes": True, "threads_per_worker": 1}  # one task per worker process
    remote = task_runner(load_config("smoke", {"orchestration.task_runner": "dask",
                                               "orchestration.dask_address": "tcp://127.0.0.1:8786"}))
    assert remote.address == "tcp://127.0.0.1:8786"
    ray = task_runner(load_config("smoke", {"orchestration.task_runner": "ray", "orchestration.n_workers": 3}))
    assert isinstance(ray, RayTaskRunner) and ray.init_kwargs["num_cpus"] == 3
    remote = task_runner(load_config("smoke", {"orchestration.task_runner": "ray",
                                               "orchestration.ray_address": "ray://10.0.0.5:10001"}))
    assert remote.address == "ray://10.0.0.5:10001"
    with pytest.raises(ValueError, match="threads.*dask.*ray"):
        load_config("smoke", {"orchestration.task_runner": "spark"})


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_a_runner_without_its_extra_names_the_extra(kind: str, monkeypatch: pytest.MonkeyPatch):
    from flows.common import task_runner

    monkeypatch.setitem(sys.modules, f"prefect_{kind}", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=rf"prefect-{kind}: pip install -e '\.\[{kind}\]'"):
        task_runner(load_config("smoke", {"orchestration.task_runner": kind}))
