"""The ingest tasks on the 60-image fixture: check the source, plan, one task per shard, finish, and what
finish logs to MLflow. A data root holding only the raw dataset is ingested step by step, as the flow does."""

from __future__ import annotations

import json
import os
import socket

import pytest

from mmcore.stages import ingest as S


def test_check_source_names_the_format_and_annotation_files(built, run_log):
    from tasks.ingest import check_source

    info = check_source.fn(built.cfg, built.cat)
    assert info == S.SourceInfo(str(built.cat.raw), "jsonl", ("annotations.jsonl",))
    assert run_log() == [f"source {built.cat.raw}: format jsonl, 1 annotation file(s): annotations.jsonl"]


def test_check_source_of_a_missing_dataset_says_how_to_get_one(harness, tmp_path, config_at):
    from mmcore.catalog import Catalog
    from tasks.ingest import check_source

    cfg = config_at(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'raw' / 'smoke'} does not exist.*mm data synth"):
        check_source.fn(cfg, Catalog.from_config(cfg))


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")  # the rejects table
def test_plan_shards_and_finish_ingest_the_dataset_and_log_it(built, data_copy, run_log, mlflow_run):
    from tasks.ingest import finish, ingest_shard, plan

    cfg, cat = data_copy()  # the raw dataset only
    planned = plan.fn(cfg, cat)
    assert (planned.records_in, planned.kept) == (60, 0)
    assert [(w.index, w.records) for w in planned.work] == [(0, 40), (1, 20)]  # smoke: 40 records per shard
    assert run_log() == ["60 records in the source: 0 kept from earlier runs, 60 to process in 2 shard(s)"]

    shards = [ingest_shard.fn(planned.path, work, 1, None) for work in planned.work]
    here = f"{socket.gethostname()}:{os.getpid()}"  # one worker, no pool: decoded in this process
    assert [(s.index, s.accepted, s.rejected, s.new, s.writer) for s in shards] == [(0, 40, 0, True, here),
                                                                                     (1, 20, 0, True, here)]
    assert [s.samples_path for s in shards] == [str(cat.processed.samples(0)), str(cat.processed.samples(1))]
    assert run_log()[1:] == [f"shard 00000: 40 accepted, 0 rejected (written by {here})",
                             f"shard 00001: 20 accepted, 0 rejected (written by {here})"]
    assert not cat.processed.manifest.exists()  # not complete before finish

    result = finish.fn(cfg, cat, planned.path, shards, mlflow_run.id)
    expected = built.result.ingest  # the same records through the library's one-process run
    counts = (result.records_in, result.accepted, result.rejected, result.processed_now, result.kept)
    assert counts == (60, 60, 0, 60, 0)
    assert result.digest == expected.digest and result.splits == expected.splits
    assert sum(result.splits.values()) == 60 and not result.tokenizer_kept and result.shard_writers == (here,)
    assert result.processed == cat.processed and cat.processed.manifest.is_file()
    assert not cat.processed.staging.exists()
    # MLflow: the counts, the lineage tags, the manifest and tokenizer, the source as the consumed dataset
    metrics = mlflow_run.metrics()
    assert {k: metrics[k] for k in ("records_in", "accepted", "rejected", "processed", "kept", "dropped",
                                    "shard_writers")} == {"records_in": 60, "accepted": 60, "rejected": 0,
                                                          "processed": 60, "kept": 0, "dropped": 0,
                                                          "shard_writers": 1}
    assert {k: metrics[f"split_{k}"] for k in result.splits} == result.splits
    assert metrics["records_per_second"] == pytest.approx(60 / result.seconds)
    tags = mlflow_run.tags()
    assert (tags["dataset_digest"], tags["processed_dir"], tags["source_format"], tags["source_uri"]) == (
        result.digest, str(cat.processed), "jsonl", str(cat.raw))
    assert (tags["task_runner"], tags["shard_writer_hosts"]) == ("threads", here)
    assert mlflow_run.artifacts() == ["config.json", "manifest.json", "tokenizer"]  # config.json: start_run's
    assert mlflow_run.artifacts("tokenizer") == ["tokenizer/tokenizer.json"]
    assert mlflow_run.load_dict("manifest.json") == json.loads(cat.processed.manifest.read_text())
    assert mlflow_run.datasets() == [("smoke-jsonl", result.source_digest[:36], {"source"})]


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")
def test_a_rerun_with_nothing_new_keeps_every_shard_and_the_tokenizer(built, data_copy, run_log, mlflow_run):
    from tasks.ingest import finish, plan

    cfg, cat = data_copy("processed")
    before = {p.name: p.stat().st_mtime_ns for p in cat.processed.path.iterdir()}
    planned = plan.fn(cfg, cat)
    assert (planned.records_in, planned.kept, planned.work) == (60, 60, [])
    assert cat.processed.manifest.exists()  # nothing changes: the dataset stays complete meanwhile
    result = finish.fn(cfg, cat, planned.path, [], mlflow_run.id)
    assert (result.processed_now, result.kept, result.dropped, result.tokenizer_kept) == (0, 60, 0, True)
    assert result.digest == built.result.ingest.digest
    assert {p.name: p.stat().st_mtime_ns for p in cat.processed.path.iterdir() if p.name != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"}  # shards and tokenizer untouched
    assert f"no record changed: keeping the tokenizer {cat.processed.tokenizer}" in run_log()
    assert mlflow_run.metrics()["kept"] == 60 and mlflow_run.metrics()["processed"] == 0


def test_decode_pool_is_shared_only_by_thread_runners():
    from tasks.ingest import _POOLS, decode_pool

    with decode_pool(1, "threads") as one, decode_pool(4, "dask") as dask:
        assert (one, dask) == (None, None)  # one worker decodes in place; a cluster is its own parallelism
    with decode_pool(2, "threads") as key:
        assert key in _POOLS and _POOLS[key]._max_workers == 2
    assert key not in _POOLS
