"""`mm runs compare`: the newest pipeline (or stage) runs side by side, and their metrics' per-step curves.

Run: `mm runs compare --experiment shapes --metrics t2i_r1,vqa_acc --limit 3 --plot runs.png`
(`--stage pretrain --metrics val_t2i_r1` compares one stage's runs).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from rich.table import Table

from mmcore.io import atomic_path
from mmcore.registry_gate import higher_is_better

MAX_PANELS = 6  # curve panels in one figure: more is unreadable


def find_runs(client: MlflowClient, experiment: str, stage: str = "pipeline", limit: int = 5) -> list[Run]:
    """The newest `limit` runs tagged `stage` in `experiment`, newest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment {experiment!r}; experiments: {names}")
    return list(client.search_runs([exp.experiment_id], f"tags.stage = '{stage}'", max_results=limit,
                                   order_by=["attributes.start_time DESC"]))


def alias_markers(client: MlflowClient, model_name: str) -> dict[str, list[str]]:
    """run id -> ["@champion", ...]: each alias of `model_name` marks the run that logged its version and
    that run's parent (the pipeline run)."""
    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    marks: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        run_id = client.get_model_version(model_name, version).run_id
        if not run_id:
            continue
        parent = client.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID)
        for rid in filter(None, (run_id, parent)):
            marks.setdefault(rid, []).append(f"@{alias}")
    return marks


def default_metrics(runs: list[Run]) -> list[str]:
    """The headline test metrics the runs have (mmcore/report.py order), else all their metrics."""
    from mmcore.report import HEADLINE

    present = set().union(*(r.data.metrics for r in runs)) if runs else set()
    return [m for m in HEADLINE if m in present] or sorted(present)


def compare_table(runs: list[Run], metrics: list[str], marks: dict[str, list[str]]) -> Table:
    """Rows are metrics, columns are runs (name, start time, git commit, aliases); the best value is bold."""
    table = Table(title=f"{len(runs)} run(s), newest first")
    table.add_column("metric")
    for run in runs:
        commit = run.data.tags.get(MLFLOW_GIT_COMMIT, "")[:7] or "no commit"
        label = [run.data.tags.get(MLFLOW_RUN_NAME, run.info.run_name or run.info.run_id[:8]),
                 datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M"), commit]
        table.add_column("\n".join(label + [" ".join(marks.get(run.info.run_id, []))]), justify="right")
    for metric in metrics:
        values = [run.data.metrics.get(metric) for run in runs]
        known = [v for v in values if v is not None]
        best = (max if higher_is_better(metric) else min)(known) if len(known) > 1 else None
        table.add_row(metric, *["" if v is None else f"[bold]{v:.4f}[/bold]" if v == best else f"{v:.4f}"
                                for v in values])
    return table


def children(client: MlflowClient, run: Run) -> list[Run]:
    """The stage runs under a pipeline run."""
    return list(client.search_runs([run.info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{run.info.run_id}'"))


def history(client: MlflowClient, run: Run, metric: str, stages: list[Run]) -> list[Metric]:
    """The per-step values of `metric`: the run's own, or the longest among its stage runs' (e.g. pretrain's
    val_t2i_r1 by epoch), sorted by step."""
    best = client.get_metric_history(run.info.run_id, metric)
    for child in stages:
        if len(best) > 1:
            break
        found = client.get_metric_history(child.info.run_id, metric) if metric in child.data.metrics else []
        best = found if len(found) > len(best) else best
    return sorted(best, key=lambda m: (m.step, m.timestamp))


def curve_metrics(runs: list[Run], stages: dict[str, list[Run]]) -> list[str]:
    """Default curves: the validation metrics (val_*) the runs or their stage runs logged."""
    names = {k for run in runs for r in [run, *stages[run.info.run_id]] for k in r.data.metrics}
    return sorted(k for k in names if k.startswith("val_") or "_val_" in k)[:MAX_PANELS]


def plot_curves(client: MlflowClient, runs: list[Run], metrics: list[str] | None, out: str | Path) -> list[str]:
    """Write one panel per metric, one line per run (x: step, e.g. epoch) to `out`; returns the metrics drawn."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or open-figure state (renders with Agg)
    from matplotlib.ticker import MaxNLocator

    stages = {run.info.run_id: children(client, run) for run in runs}
    metrics = (metrics or curve_metrics(runs, stages))[:MAX_PANELS]
    if not metrics:
        raise ValueError("no metric curves to plot: name metrics with --metrics")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        for run in runs:
            points = history(client, run, metric, stages[run.info.run_id])
            if points:
                ax.plot([p.step for p in points], [p.value for p in points], marker="o", markersize=3,
                        label=run.data.tags.get(MLFLOW_RUN_NAME, run.info.run_id[:8]))
        ax.set_title(metric)
        ax.set_xlabel("step (epoch)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)
    return metrics
