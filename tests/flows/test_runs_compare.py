"""`mm runs compare`: pipeline runs with stage runs, metrics and per-epoch histories in a temporary SQLite
MLflow store, shown as a table and drawn as curves."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

START = 1_780_000_000_000  # ms: fixed start times make "newest first" deterministic


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three pipeline runs (a, b, c; c newest), each with a pretrain run logging val_t2i_r1 per epoch and an
    evaluate run; b's evaluate run logged the @champion version, c's the @challenger."""
    import flows  # noqa: F401  (embedded defaults; the variable below wins)

    tmp_path = tmp_path_factory.mktemp("runs-compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        _fill(tmp_path)
        yield tmp_path


def _fill(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_registered_model("mmcore-cmp")
    scores = {"a": (0.10, 0.50), "b": (0.30, 0.60), "c": (0.25, 0.70)}
    for i, (name, (t2i, vqa)) in enumerate(scores.items()):
        parent = client.create_run(exp, start_time=START + i * 1000, run_name=f"pipeline-{name}",
                                   tags={"stage": "pipeline", "mlflow.source.git.commit": f"{name * 7}0123456"})
        client.log_batch(parent.info.run_id, metrics=[Metric("t2i_r1", t2i, START, 0), Metric("vqa_acc", vqa, START, 0),
                                                      Metric("t2i_mean_rank", 10 - i, START, 0)])
        kids = {}
        for stage in ("pretrain", "evaluate"):
            kids[stage] = client.create_run(exp, start_time=START + i * 1000 + 1, run_name=f"{stage}-{name}",
                                            tags={"stage": stage, "mlflow.parentRunId": parent.info.run_id}).info.run_id
        curve = [Metric("val_t2i_r1", t2i * (epoch + 1) / 3, START, epoch) for epoch in range(3)]
        client.log_batch(kids["pretrain"], metrics=curve)
        client.log_batch(kids["evaluate"], metrics=[Metric("t2i_r1", t2i, START, 0)])
        if name in ("b", "c"):
            mv = client.create_model_version("mmcore-cmp", f"runs:/{kids['evaluate']}/model", run_id=kids["evaluate"])
            client.set_registered_model_alias("mmcore-cmp", "champion" if name == "b" else "challenger", mv.version)


def _invoke(*args: str):
    from flows.cli import app

    res = CliRunner().invoke(app, ["runs", "compare", "--experiment", "cmp", *args], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def test_table_shows_runs_side_by_side_newest_first(store):
    out = _invoke()
    header = out[: out.index("t2i_r1")]
    assert header.index("pipeline-c") < header.index("pipeline-b") < header.index("pipeline-a")
    assert "ccccccc" in header and "aaaaaaa" in header  # git commit, short
    cells = [[c.strip() for c in line.split("┃")[1:-1]] for line in header.splitlines() if line.startswith("┃")]
    assert cells[0][1:] == ["pipeline-c", "pipeline-b", "pipeline-a"]
    assert cells[-1][1:] == ["@challenger", "@champion", ""]  # aliases mark the runs that logged the versions
    row = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("t2i_r1 "))
    assert [v for v in row.replace("│", " ").split()[1:]] == ["0.2500", "0.3000", "0.1000"]
    rank = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("t2i_mean_rank"))
    assert rank.replace("│", " ").split()[1:] == ["8.0000", "9.0000", "10.0000"]
    assert "vqa_acc" in out and "0.7000" in out


def test_metrics_and_limit_options(store):
    out = _invoke("--metrics", "vqa_acc", "--limit", "2")
    assert "pipeline-c" in out and "pipeline-b" in out and "pipeline-a" not in out
    assert "vqa_acc" in out and "t2i_r1" not in out


def test_stage_runs_can_be_compared(store):
    out = _invoke("--stage", "evaluate", "--metrics", "t2i_r1")
    assert "evaluate-a" in out and "evaluate-c" in out and "pipeline-a" not in out


def test_plot_writes_a_png_of_the_stage_curves(store):
    png = store / "curves" / "runs.png"
    out = _invoke("--plot", str(png))
    assert f"curves of val_t2i_r1 written to {png}" in out  # default curves: the stage runs' validation metrics
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == (450, 320)  # one panel, 4.5 x 3.2 inches at 100 dpi
    named = store / "named.png"
    out = _invoke("--plot", str(named), "--metrics", "val_t2i_r1,t2i_r1")
    assert f"curves of val_t2i_r1, t2i_r1 written to {named}" in out
    with Image.open(named) as img:
        assert img.size == (900, 320)  # two panels side by side


def test_history_comes_from_the_stage_run(store):
    from mlflow.tracking import MlflowClient

    from flows.runs import children, find_runs, history

    client = MlflowClient()
    newest = find_runs(client, "cmp", limit=1)[0]
    points = history(client, newest, "val_t2i_r1", children(client, newest))
    assert [p.step for p in points] == [0, 1, 2]
    assert [p.value for p in points] == pytest.approx([0.25 / 3, 0.5 / 3, 0.25])


def test_unknown_experiment_names_the_existing_ones(store):
    from flows.cli import app

    res = CliRunner().invoke(app, ["runs", "compare", "--experiment", "nope"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "no MLflow experiment 'nope'" in res.output and "cmp" in res.output
