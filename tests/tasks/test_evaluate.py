"""The evaluation tasks on the 60-image fixture: test metrics and examples, logged to MLflow, and the
report published as a Prefect artifact with the champion it was compared with."""

from __future__ import annotations

import pytest

REPORT_HEADER = "| metric | value | baseline |"


@pytest.fixture(scope="module")
def evaluated(built, harness):
    """The evaluate task's result on the fixture (read-only: it writes nothing), and the run it logged to."""
    from tasks import tracking
    from tasks.evaluate import evaluate

    run_id = tracking.start_run(built.cfg, "test")
    try:
        return evaluate.fn(built.cfg, built.cat, run_id), run_id
    finally:
        tracking.end_run(run_id)


def test_evaluate_scores_the_test_split_and_records_the_features_it_read(built, evaluated):
    from tasks import tracking

    result, run_id = evaluated
    expected = built.result.evaluate  # the library's own evaluation of the same heads and features
    assert result.metrics.keys() == expected.metrics.keys()
    assert result.metrics == pytest.approx(expected.metrics)
    assert (result.features_digest, result.heads_sha256) == (expected.features_digest, expected.heads_sha256)
    assert result.metrics["test_images"] == built.result.ingest.splits["test"]
    assert result.metrics["t2i_r1_baseline"] == pytest.approx(1 / result.metrics["test_images"])
    assert set(result.examples) == {"caption", "translation", "generation"}
    assert result.outputs == {}
    inputs = tracking.client().get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest, [t.value for t in i.tags]) for i in inputs] == [
        ("smoke-features", result.features_digest[:36], ["test"])]


def test_log_evaluation_logs_every_metric_and_the_examples(evaluated, mlflow_run):
    from tasks.evaluate import log_evaluation

    result, _ = evaluated
    log_evaluation.fn(result, mlflow_run.id)
    assert mlflow_run.metrics() == pytest.approx(result.metrics)
    assert mlflow_run.artifacts() == ["caption_examples.json", "config.json", "generation_examples.json",
                                      "translation_examples.json"]
    for head, rows in result.examples.items():
        assert mlflow_run.load_dict(f"{head}_examples.json") == rows


def _published(key: str) -> str:
    """The markdown of the newest Prefect artifact with `key`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0].data


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")
def test_publish_report_with_the_gate_decision(built, evaluated):
    from tasks.evaluate import publish_report

    result, _ = evaluated
    model = {"name": "mmcore-smoke", "version": "2", "alias": "challenger", "promoted": False,
             "reason": "t2i_r1 not better", "champion": {"version": "1", "metrics": {"t2i_r1": 0.75}}}
    markdown = publish_report.fn(built.cfg, result, model)
    assert f"{REPORT_HEADER} @champion v1 |" in markdown
    assert f"| t2i_r1 | {result.metrics['t2i_r1']:.4f} | {result.metrics['t2i_r1_baseline']:.4f} | 0.7500 |" in markdown
    assert "Version 2 of mmcore-smoke is now **@challenger** (not promoted): t2i_r1 not better." in markdown
    assert "## Example captions" in markdown
    assert _published("smoke-evaluation") == markdown


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")
@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")
def test_publish_report_without_registration_shows_the_current_champion(built, evaluated, config_at):
    from tasks.evaluate import publish_report

    result, _ = evaluated
    cfg = config_at(built.root, **{"registry.model_name": "mmcore-never-registered"})
    markdown = publish_report.fn(cfg, result)
    assert f"{REPORT_HEADER} @champion |" in markdown  # no champion: an empty column
    assert f"| vqa_acc | {result.metrics['vqa_acc']:.4f} | {result.metrics['vqa_acc_baseline']:.4f} |  |" in markdown
    assert "## Promotion" not in markdown
    assert _published("smoke-evaluation") == markdown


def test_corrupt_heads_fail_the_evaluate_flow_naming_the_stage_to_refresh(data_copy):
    from flows.evaluate import evaluate_flow
    from mmcore.integrity import CorruptOutput
    from tests.mmcore.stages.corruptkit import truncate

    cfg, cat = data_copy("processed", "pretrain", "features", "heads")
    truncate(cat.heads.heads)
    with pytest.raises(CorruptOutput, match=rf"^{cat.heads.heads} is corrupt \(torch.load fails on .*\): "
                                            r"run the train stage again \(--refresh train\)$"):
        evaluate_flow(cfg, promote=False)
