"""The train task on the 60-image fixture: every head the data supports, with its epochs, the checkpoint
and the answer count logged to MLflow."""

from __future__ import annotations

from mmcore.catalog import Catalog
from mmcore.io import file_sha256
from tests.mmcore.stages.corruptkit import truncate


def test_train_writes_the_heads_and_logs_their_epochs(built, data_copy, run_log, mlflow_run):
    from tasks.train import train

    cfg, cat = data_copy("processed", "pretrain", "features")
    result = train.fn(cfg, cat, mlflow_run.id)
    expected = built.result.train
    assert cat.heads.heads.is_file() and result.outputs == {cat.heads.heads: file_sha256(cat.heads.heads)}
    # same features, config and seed on one machine: the fixture's heads, byte for byte
    assert (result.heads_sha256, result.features_digest) == (expected.heads_sha256, expected.features_digest)
    assert (result.answers, result.skipped) == (expected.answers, expected.skipped) and result.answers > 1
    assert result.skipped == {}  # shapes have captions in two languages and questions: every head trains
    metrics = mlflow_run.metrics()
    for head in ("vqa", "caption", "translation", "generation", "vqa_question_only", "vqa_image_only"):
        assert [step for step, _ in mlflow_run.history(f"{head}_train_loss")] == [0], head  # one epoch each
        assert any(line.startswith(f"{head}_epoch 1/1: ") for line in run_log()), head
    assert metrics["vqa_train_loss"] > 0
    assert mlflow_run.tags()["answers"] == str(result.answers)
    assert mlflow_run.artifacts("checkpoints") == ["checkpoints/heads.pt"]
    assert mlflow_run.datasets() == [("smoke-features", result.features_digest[:36], {"train"})]


def test_the_flow_trains_corrupt_cached_heads_again_with_a_warning(data_copy, config_at, run_log):
    from flows.train import train_flow

    copied, _ = data_copy("processed", "pretrain", "features")
    cfg = config_at(copied.data_root, **{"heads.vqa_baselines": False, "heads.translation": False,
                                         "heads.generation": False})  # fewer heads: a quicker test
    cat = Catalog.from_config(cfg)
    first = train_flow(cfg)
    good = cat.heads.heads.read_bytes()
    truncate(cat.heads.heads)
    again = train_flow(cfg)  # the same features, config and seed: the same bytes
    assert again == first and cat.heads.heads.read_bytes() == good
    warned = [line for line in run_log() if "corrupt" in line]
    assert len(warned) == 1 and warned[0].startswith(
        f"the cached result of train stands for {cat.heads.heads}, which is corrupt (sha256 ")
