"""The extract tasks on the 60-image fixture: a feature shard whose inputs are unchanged is kept, a missing
one is written again, and finish writes the manifest and logs it to MLflow. Under their flow (the mapped
shard tasks through `map_cached`): a cached shard that is corrupt is extracted again with a warning,
`refresh` reads none of the outputs it replaces, and a corrupt encoder fails the flow once, before any
shard task."""

from __future__ import annotations

import json

import pytest

from mmcore.integrity import CorruptOutput, CorruptOutputWarning
from mmcore.io import file_sha256
from tests.mmcore.stages.corruptkit import truncate


def test_extract_shards_then_finish_writes_and_logs_the_manifest(built, data_copy, mlflow_run, run_log):
    from tasks.extract import extract_shard, finish

    cfg, cat = data_copy("processed", "pretrain", "features")
    listed = {s["path"]: s for s in json.loads(built.cat.features.manifest.read_text())["shards"]}
    cat.features.shard(1).unlink()

    kept = extract_shard.fn(cfg, cat, 0)
    again = extract_shard.fn(cfg, cat, 1)
    assert (kept.index, kept.path, kept.rows, kept.reused) == (0, cat.features.shard(0), 40, True)
    assert (again.index, again.path, again.rows, again.reused) == (1, cat.features.shard(1), 20, False)
    assert again.outputs == {cat.features.shard(1): file_sha256(cat.features.shard(1))}
    # the same encoder on the same shard writes the same bytes
    assert file_sha256(cat.features.shard(1)) == listed[cat.features.shard(1).name]["sha256"]

    cat.features.manifest.unlink()
    result = finish.fn(cfg, cat, [again, kept], mlflow_run.id)  # in any order
    expected = built.result.extract
    assert (result.digest, result.dataset_digest, result.encoder_sha256) == (
        expected.digest, expected.dataset_digest, expected.encoder_sha256)
    assert (result.rows, result.shards, result.reused, result.features) == (60, 2, 1, cat.features)
    manifest = json.loads(cat.features.manifest.read_text())
    assert [s["path"] for s in manifest["shards"]] == [cat.features.shard(0).name, cat.features.shard(1).name]
    assert mlflow_run.metrics() == {"feature_rows": 60, "feature_shards_reused": 1}
    tags = mlflow_run.tags()
    assert (tags["features_digest"], tags["features_dir"], tags["dataset_digest"]) == (
        result.digest, str(cat.features), result.dataset_digest)
    assert mlflow_run.load_dict("features_manifest.json") == manifest
    assert mlflow_run.datasets() == [("smoke-samples", result.dataset_digest[:36], {"extract"})]


def _bytes(result) -> dict:
    return {path: path.read_bytes() for path in result.outputs}


def test_the_flow_extracts_a_corrupt_cached_shard_and_manifest_again_with_warnings(data_copy, run_log):
    from flows.extract import extract_flow

    cfg, cat = data_copy("processed", "pretrain", "features")
    first = extract_flow(cfg)  # the fixture's shards are kept; the shard tasks' results are cached
    good, shard = _bytes(first), cat.features.shard(1)
    assert first.reused == 2 and set(good) == {cat.features.manifest, *cat.features.listed()}
    truncate(shard)
    truncate(cat.features.manifest)
    with pytest.warns(CorruptOutputWarning, match=f"{cat.features.manifest} is corrupt"):
        again = extract_flow(cfg)
    assert again.reused == 1 and _bytes(again) == good  # byte for byte
    warned = [line for line in run_log() if "corrupt" in line]
    assert len(warned) == 2, warned  # the shard once (its rerun does not read it), the manifest once
    assert warned[0].startswith(f"the cached result of mapped task 1 stands for {shard}, which is corrupt (sha256 ")
    assert warned[1].startswith(f"warning: {cat.features.manifest} is corrupt (JSONDecodeError: ")


def test_refresh_reads_none_of_the_outputs_it_replaces(data_copy, run_log, monkeypatch):
    from flows.extract import extract_flow
    from mmcore import features

    cfg, cat = data_copy("processed", "pretrain", "features")
    good = _bytes(extract_flow(cfg))
    for path in good:
        truncate(path)
    monkeypatch.setattr(features, "kept_rows", lambda *a: pytest.fail("refresh read a shard it replaces"))
    result = extract_flow(cfg, refresh=True)
    assert result.reused == 0 and _bytes(result) == good
    assert not [line for line in run_log() if "corrupt" in line]


def test_a_corrupt_encoder_fails_the_flow_once_before_any_shard_task(data_copy, run_log):
    from flows.extract import extract_flow

    cfg, cat = data_copy("processed", "pretrain", "features")
    truncate(cat.pretrain.encoder)
    shards = {path: path.stat().st_mtime_ns for path in cat.features.listed()}
    with pytest.raises(CorruptOutput, match=rf"^{cat.pretrain.encoder} is corrupt \(torch.load fails on .*\): "
                                            r"run the pretrain stage again \(--refresh pretrain\)$"):
        extract_flow(cfg)
    assert {path: path.stat().st_mtime_ns for path in cat.features.listed()} == shards
