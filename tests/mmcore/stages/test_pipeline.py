"""Every stage in order in one process: each stage's result names the outputs the next one read."""

from __future__ import annotations

import json

from mmcore.data.dataset import read_manifest


def test_each_stage_reads_what_the_one_before_wrote(smoke_stages):
    cfg, cat, run = smoke_stages
    assert list(run.seconds) == ["ingest", "pretrain", "extract", "train", "evaluate"]
    assert all(s > 0 for s in run.seconds.values())
    assert run.ingest.digest == read_manifest(cat.processed)["digest"] == run.pretrain.dataset_digest
    assert run.extract.dataset_digest == run.ingest.digest
    assert run.extract.encoder_sha256 == run.pretrain.encoder_sha256
    assert run.train.features_digest == run.extract.digest == run.evaluate.features_digest
    assert run.evaluate.heads_sha256 == run.train.heads_sha256
    assert run.extract.rows == run.ingest.accepted == 60
    assert all(path.exists() for r in (run.ingest, run.pretrain, run.extract, run.train) for path in r.outputs)
    features = json.loads(cat.features.manifest.read_text())
    assert features["rows"] == 60 and features["processed_digest"] == run.ingest.digest
    assert run.evaluate.metrics["test_images"] == run.ingest.splits["test"]
