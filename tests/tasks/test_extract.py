"""The extract tasks on the 60-image fixture: a feature shard whose inputs are unchanged is kept, a missing
one is written again, and finish writes the manifest and logs it to MLflow."""

from __future__ import annotations

import json

from mmcore.io import file_sha256


def test_extract_shards_then_finish_writes_and_logs_the_manifest(built, data_copy, mlflow_run):
    from tasks.extract import extract_shard, finish

    cfg, cat = data_copy("processed", "pretrain", "features")
    listed = {s["path"]: s for s in json.loads(built.cat.features.manifest.read_text())["shards"]}
    cat.features.shard(1).unlink()

    kept = extract_shard.fn(cfg, cat, 0)
    again = extract_shard.fn(cfg, cat, 1)
    assert (kept.index, kept.path, kept.rows, kept.reused) == (0, cat.features.shard(0), 40, True)
    assert (again.index, again.path, again.rows, again.reused) == (1, cat.features.shard(1), 20, False)
    assert again.outputs == [cat.features.shard(1)]
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
