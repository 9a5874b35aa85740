"""The champion gate: the pure decision, the test-split digest, and registration against a real MLflow
registry (a SQLite store in a temporary folder) with the alias each new version gets."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.config import RegistryConfig
from mmcore.io import write_json
from mmcore.registry_gate import PRIMARY_ORDER, Scored, decide, higher_is_better, primary_metric, split_digest

CFG = RegistryConfig(margin=0.01)


def _champion(metrics: dict[str, float], digest: str | None = "split-a") -> Scored:
    return Scored(metrics, digest, version="3")


@pytest.mark.parametrize(("new", "old", "promote", "says"), [
    (0.52, 0.50, True, "better by 0.0200"),  # beats by more than the margin
    (0.505, 0.50, False, "within the margin"),  # better, but not by the margin
    (0.51, 0.50, False, "within the margin"),  # exactly the margin is not enough
    (0.50, 0.50, False, "not better"),  # a tie
    (0.40, 0.50, False, "not better"),  # worse
])
def test_higher_is_better_metric_needs_the_margin(new, old, promote, says):
    d = decide(Scored({"t2i_r1": new}, "split-a"), _champion({"t2i_r1": old}), CFG)
    assert (d.promote, d.alias) == (promote, "champion" if promote else "challenger")
    assert (d.metric, d.challenger_value, d.champion_value) == ("t2i_r1", new, old)
    assert says in d.reason and "@champion (version 3)" in d.reason


def test_lower_is_better_metric():
    cfg = RegistryConfig(primary_metric="generation_perplexity_en", margin=0.5)
    better = decide(Scored({"generation_perplexity_en": 9.0}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                    cfg)
    assert better.promote and "lower is better" in better.reason
    worse = decide(Scored({"generation_perplexity_en": 11.0}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                   cfg)
    assert not worse.promote and "not better" in worse.reason
    close = decide(Scored({"generation_perplexity_en": 9.8}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                   cfg)
    assert not close.promote and "within the margin" in close.reason
    assert not higher_is_better("t2i_mean_rank") and not higher_is_better("val_caption_loss")
    assert higher_is_better("vqa_acc") and higher_is_better("caption_cider_d")


def test_first_model_becomes_champion_whatever_its_scores():
    d = decide(Scored({"t2i_r1": 0.0}, "split-a"), None, CFG)
    assert d.promote and d.alias == "champion" and "first model" in d.reason
    assert decide(Scored({}, None), None, CFG).promote


def test_different_or_unknown_test_split_is_never_promoted():
    d = decide(Scored({"t2i_r1": 0.9}, "split-b"), _champion({"t2i_r1": 0.1}, "split-a"), CFG)
    assert not d.promote and d.alias == "challenger"
    assert "different test split" in d.reason and "split-a" in d.reason and "split-b" in d.reason
    old = decide(Scored({"t2i_r1": 0.9}, "split-a"), _champion({"t2i_r1": 0.1}, None), CFG)  # pre-gate champion
    assert not old.promote and "unknown" in old.reason


def test_missing_primary_metric():
    no_metric = decide(Scored({"t2i_r1": 0.9}, "s"), _champion({"vqa_acc": 0.5}, "s"), CFG)
    assert not no_metric.promote and "has no t2i_r1" in no_metric.reason
    nothing = decide(Scored({"records_in": 3.0}, "s"), _champion({"t2i_r1": 0.5}, "s"), CFG)
    assert not nothing.promote and nothing.metric is None and "none of the primary metrics" in nothing.reason
    configured = decide(Scored({"t2i_r1": 0.9}, "s"), _champion({"t2i_r1": 0.1}, "s"),
                        RegistryConfig(primary_metric="vqa_acc"))
    assert not configured.promote and "no value for the primary metric vqa_acc" in configured.reason
    nan = decide(Scored({"t2i_r1": float("nan")}, "s"), _champion({"t2i_r1": 0.1}, "s"),
                 RegistryConfig(primary_metric="t2i_r1"))
    assert not nan.promote


def test_auto_primary_metric_follows_the_documented_order():
    assert primary_metric({"vqa_acc": 0.5, "caption_cider_d": 1.0, "t2i_r1": 0.1}, CFG) == "t2i_r1" == PRIMARY_ORDER[0]
    assert primary_metric({"vqa_acc": 0.5, "caption_cider_d": 1.0}, CFG) == "vqa_acc"  # easy-VQA: no captions
    assert primary_metric({"caption_cider_d": 1.0}, CFG) == "caption_cider_d"
    assert primary_metric({"caption_cider_d": 1.0}, RegistryConfig(primary_metric="i2t_r5")) == "i2t_r5"


def test_registry_config_validates():
    with pytest.raises(ValueError, match="margin"):
        RegistryConfig(margin=-0.1)
    with pytest.raises(ValueError, match="must differ"):
        RegistryConfig(alias="best", challenger_alias="best")
    assert RegistryConfig().margin == 0.005 and RegistryConfig().challenger_alias == "challenger"


def _processed(root: Path, rows: list[dict]) -> Path:
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("sample_id", pa.string()), ("split", pa.string()), ("image", pa.binary()),
        ("captions", pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))),
        ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string())]))),
    ]))
    root.mkdir(parents=True)
    pq.write_table(table.slice(0, 2), root / "samples-0.parquet")
    pq.write_table(table.slice(2), root / "samples-1.parquet")
    write_json(root / "manifest.json", {"shards": [{"samples": "samples-0.parquet"}, {"samples": "samples-1.parquet"}]})
    return root


def _rows(**change: str) -> list[dict]:
    rows = [{"sample_id": f"s{i}", "split": "test" if i % 2 else "train", "image": f"png{i}".encode(),
             "captions": [{"lang": "en", "text": f"caption {i}"}], "qa": []} for i in range(4)]
    for key, value in change.items():  # e.g. s1="new caption": edit that sample's caption
        next(r for r in rows if r["sample_id"] == key)["captions"][0]["text"] = value
    return rows


def test_split_digest_changes_only_with_the_split_content(tmp_path):
    base = split_digest(_processed(tmp_path / "a", _rows()))
    assert base == split_digest(_processed(tmp_path / "b", _rows()))
    assert base == split_digest(_processed(tmp_path / "c", _rows(s0="edited train caption")))  # s0 is train
    assert base != split_digest(_processed(tmp_path / "d", _rows(s1="edited test caption")))
    assert base != split_digest(tmp_path / "a", "train")


# Registration against a real registry -------------------------------------------------------------------


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    import flows  # noqa: F401  (embedded defaults; the variables below win)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MM_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    return tmp_path


def _register(cfg, bundle, t2i_r1: float, digest: str = "split-a") -> dict:
    from tasks import tracking
    from tasks.registry import register_bundle

    metrics = {"t2i_r1": t2i_r1, "t2i_r1_baseline": 0.01, "vqa_acc": 0.5}
    with tracking.stage_run(cfg, "evaluate") as run_id:
        tracking.log_metrics(run_id, metrics)  # as evaluate_model does: the gate reads the champion's run metrics
        model = register_bundle(cfg, bundle, metrics, run_id, digest)
    model["run_id"] = run_id
    return model


def test_register_moves_champion_only_for_a_better_model(mlflow_store, tiny_bundle):
    from mlflow.tracking import MlflowClient

    from mmcore.config import load_config
    from tasks.evaluation import report_markdown

    cfg = load_config("smoke", {"registry.margin": 0.01}, dataset="gate")
    client = MlflowClient()

    def alias(name: str) -> str:
        return str(client.get_model_version_by_alias("mmcore-gate", name).version)

    first = _register(cfg, tiny_bundle, 0.30)
    assert (first["version"], first["alias"], first["promoted"], first["champion"]) == ("1", "champion", True, None)
    assert alias("champion") == "1"

    close = _register(cfg, tiny_bundle, 0.305)  # better, but within the margin
    assert (close["alias"], close["promoted"]) == ("challenger", False)
    assert alias("champion") == "1" and alias("challenger") == "2"
    assert close["champion"]["version"] == "1" and close["champion"]["metrics"]["t2i_r1"] == pytest.approx(0.30)
    tags = client.get_model_version("mmcore-gate", "2").tags
    assert tags["test_digest"] == "split-a" and tags["primary_metric"] == "t2i_r1"
    assert tags["primary_metric_value"] == "0.305" and tags["gate_decision"] == "not_promoted"
    run_tags = client.get_run(close["run_id"]).data.tags
    assert run_tags["gate_decision"] == "not_promoted" and "within the margin" in run_tags["gate_reason"]
    assert run_tags["model_alias"] == "challenger"

    better = _register(cfg, tiny_bundle, 0.40)
    assert (better["version"], better["alias"], better["promoted"]) == ("3", "champion", True)
    assert alias("champion") == "3"
    assert "better by 0.1000" in better["reason"]

    other_split = _register(cfg, tiny_bundle, 0.99, digest="split-b")
    assert other_split["alias"] == "challenger" and "different test split" in other_split["reason"]
    assert alias("champion") == "3" and alias("challenger") == "4"

    # The report compares with the champion the gate saw, and says what the gate decided and why.
    md = report_markdown({"t2i_r1": 0.99, "t2i_r1_baseline": 0.01, "vqa_acc": 0.5}, {}, other_split["champion"],
                         other_split)
    assert "| metric | value | baseline | @champion v3 |" in md
    assert "| t2i_r1 | 0.9900 | 0.0100 | 0.4000 |" in md and "| vqa_acc | 0.5000 |  | 0.5000 |" in md
    assert "## Promotion" in md and "Version 4 of mmcore-gate is now **@challenger** (not promoted)" in md
    assert "different test split" in md


def test_report_without_champion_or_gate():
    from tasks.evaluation import report_markdown

    md = report_markdown({"vqa_acc": 0.75}, {"caption": [{"sample_id": "s1", "caption": "a red circle",
                                                          "references": ["a red circle"]}]})
    assert "| metric | value | baseline | @champion |" in md and "| vqa_acc | 0.7500 |  |  |" in md
    assert "## Promotion" not in md and "## Example captions" in md
    first = report_markdown({"vqa_acc": 0.75}, {}, None, {"name": "m", "version": "1", "alias": "champion",
                                                          "promoted": True, "reason": "no @champion yet"})
    assert "Version 1 of m is now **@champion** (promoted): no @champion yet." in first
