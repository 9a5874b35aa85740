"""The `mm` command line. Each command resolves its options into one `PipelineConfig` and hands it to a
flow (or to the library); nothing below reads a preset again.

    mm demo                                  synthetic data + the whole pipeline + a results table
    mm data synth --out data/raw/shapes --images 3000 --test-images 1000
    mm pipeline --preset demo --set pretrain.epochs=4
    mm data fetch easy-vqa                   the easy-VQA dataset into data/raw/easy-vqa
    mm ingest --dataset easy-vqa             ingest any supported format (--source, --format, --retry-rejected)
    mm data rejects --dataset easy-vqa       what the last ingest rejected, and why
    mm pretrain | extract | train | evaluate one stage (same options)
    mm caption IMAGE / mm ask IMAGE "QUESTION" / mm search "TEXT"   use the @champion model
    mm translate "a red circle on the left" --to zh / mm generate "two shapes" --lang en
    mm predict --input data/inbox --task caption --out preds.parquet   batch inference with @champion
    mm runs compare --metrics t2i_r1,vqa_acc --limit 3 --plot runs.png   the newest pipeline runs side by side
    mm setup / mm server status / mm server stop   the embedded stores; the local Prefect server commands share
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import flows  # noqa: F401  (sets the embedded defaults before Prefect is imported)
from flows.api import PrefectApi
from flows.cli_data import DEMO_IMAGES, TestImages, data_app, test_split
from flows.cli_model import model_app
from flows.cli_options import (
    Dataset,
    Format,
    Preset,
    Sets,
    Source,
    console,
    print_metrics,
    refresh_stages,
    resolve,
)
from flows.cli_server import server_app, setup
from flows.env import mm_home
from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.integrity import CorruptOutput

app = typer.Typer(help="Multimodal pipelines: ingest, pretrain, extract, train, evaluate, serve. An error is one "
                       "line (exit 2); --debug, anywhere on the command line, shows its traceback.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(data_app, name="data")
app.add_typer(model_app)
runs_app = typer.Typer(help="MLflow runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(server_app, name="server")
app.command("setup")(setup)

STAGES = ("pretrain", "extract", "train", "evaluate")
UPSTREAM = {"pretrain": "ingest", "extract": "pretrain", "train": "extract", "evaluate": "train"}
STAGE_FOLDERS = {  # what each stage reads and writes: the first line a stage command prints
    "pretrain": lambda cat: (cat.processed, cat.pretrain), "extract": lambda cat: (cat.pretrain, cat.features),
    "train": lambda cat: (cat.features, cat.heads), "evaluate": lambda cat: (cat.heads, None)}
Refresh = Annotated[list[str] | None, typer.Option(
    "--refresh", metavar="STAGE", help="run this stage even when its cached result is valid (pretrain, extract, "
                                       "train, evaluate or all; repeatable)")]


def _stage(name: str):
    def run(preset: Preset = "demo", dataset: Dataset = None, sets: Sets = None,
            refresh: Annotated[bool, typer.Option("--refresh", help="run the stage even when its cached result "
                                                  "(same inputs, config and code) is still valid")] = False) -> None:
        cfg = resolve(preset, dataset, sets)
        cat = Catalog.from_config(cfg)
        if cat.remote_root is None:  # a bucket's copy is pulled by the flow; a local one must be there now
            cat.require(UPSTREAM[name])
        source, target = STAGE_FOLDERS[name](cat)
        console.print(f"{name}: {source.path} -> {target.path if target else 'metrics'}", highlight=False)
        api = PrefectApi.start()
        from flows.common import with_task_runner

        flow = getattr(importlib.import_module(f"flows.{name}"), f"{name}_flow")  # only this stage's code
        with running(api):
            result = with_task_runner(flow, cfg)(cfg, refresh=refresh)  # orchestration.task_runner
        if isinstance(result, dict) and "metrics" in result:
            print_metrics(result["metrics"])
        else:
            console.print(result)

    run.__doc__ = f"Run the {name} stage flow."
    return run


for _name in STAGES:
    app.command(_name)(_stage(_name))


@contextmanager
def running(api: PrefectApi) -> Iterator[None]:
    """The block runs flows against `api`, their runs tagged with this process (tasks/crashed.py)."""
    from prefect import tags

    from mmcore.processes import process_id
    from tasks.crashed import PREFECT_TAG

    with api, tags(f"{PREFECT_TAG}{process_id()}"):
        yield


def check_source(cfg: PipelineConfig) -> None:
    """The dataset's source is there and readable: checked before any server starts."""
    from mmcore.stages.ingest import check_source as check

    check(cfg, Catalog.from_config(cfg))


@app.command()
def ingest(
    preset: Preset = "demo",
    dataset: Dataset = None,
    sets: Sets = None,
    source: Source = None,
    fmt: Format = None,
    workers: Annotated[int | None, typer.Option(help="image-decoding processes (default: CPU cores)")] = None,
    retry_rejected: Annotated[bool, typer.Option("--retry-rejected",
                                                 help="process records rejected by earlier runs again")] = False,
) -> None:
    """Run the ingest stage flow: only records that are new (or edited) since the last run are processed."""
    cfg = resolve(preset, dataset, sets, source, fmt)
    check_source(cfg)
    api = PrefectApi.start()
    from flows.common import with_task_runner
    from flows.ingest import ingest_flow

    with running(api):
        r = with_task_runner(ingest_flow, cfg)(cfg, workers=workers, retry_rejected=retry_rejected)
    table = Table(title=f"ingested {r.source['uri']} ({r.source['format']})")
    for col in ("records in", "accepted", "rejected", "processed now", "kept", "dropped"):
        table.add_column(col, justify="right")
    table.add_row(*map(str, (r.records_in, r.accepted, r.rejected, r.processed_now, r.kept, r.dropped)))
    console.print(table)
    if r.rejects_by_reason:
        console.print("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in r.rejects_by_reason.items()))
    texts = _texts(r.processed)
    console.print(f"splits: {r.splits}; accepted records hold {texts['captions']} captions and "
                  f"{texts['questions']} questions\nshards, rejects and manifest: {r.processed}")


def _texts(processed: Any) -> dict[str, int]:
    from mmcore.data.dataset import read_manifest

    return read_manifest(processed)["texts"]


@app.command()
def pipeline(preset: Preset = "demo", dataset: Dataset = None, sets: Sets = None, refresh: Refresh = None) -> None:
    """Run the whole pipeline flow."""
    cfg, fresh = resolve(preset, dataset, sets), refresh_stages(refresh)
    check_source(cfg)
    api = PrefectApi.start()
    from flows.pipeline import pipeline_flow

    with running(api):
        result = pipeline_flow(cfg, fresh)
    print_metrics(result["metrics"])


@app.command()
def predict(
    input_: Annotated[str, typer.Option("--input", "-i", help="a folder of images, a Parquet table, any source "
                                        "ingest reads, or an s3:// URI (search: a .txt of queries, one per line)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the Parquet file to write: one row per input")],
    task: Annotated[str, typer.Option(help="caption, ask, embed or search")] = "caption",
    question: Annotated[str | None, typer.Option(help="ask: the question for every image (default: each "
                                                      "record's own questions)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model URI (default models:/mmcore-<dataset>"
                                              "@champion)")] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset whose champion to use")] = "shapes",
    fmt: Format = None,
    k: Annotated[int, typer.Option("-k", help="search: results per query")] = 5,
    shard_rows: Annotated[int, typer.Option(help="inputs per shard, the unit a killed run resumes from")] = 256,
    add_to_index: Annotated[bool, typer.Option("--add-to-index", help="embed: register a version of the model "
                                               "whose search index also ranks these images")] = False,
) -> None:
    """Score a folder or table of new inputs with the champion: an answer or a rejection per input."""
    from mmcore import batch

    batch.read_requests(input_, task, fmt or "auto", question)  # a bad task, question or input: before any server
    batch.check_options(task, out, k, shard_rows)
    if add_to_index and task != "embed":
        raise ValueError(f"--add-to-index needs --task embed (the images' embeddings); got --task {task}")
    from tasks.predict import check_model

    check_model(model, dataset)
    api = PrefectApi.start()
    from flows.predict import batch_predict_flow

    with running(api):
        r = batch_predict_flow(input_, str(out), task, model, dataset, question, fmt or "auto", k, shard_rows,
                               add_to_index)
    table = Table(title=f"{task} with {r['model']['name'] or model} version {r['model']['version'] or '-'}")
    for col in ("inputs", "answered", "rejected", "shards", "reused"):
        table.add_column(col, justify="right")
    table.add_row(*map(str, (r["rows_in"], r["answered"], r["rejected"], r["shards"], r["shards_reused"])))
    console.print(table)
    if r["rejects_by_reason"]:
        console.print("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in r["rejects_by_reason"].items()))
    console.print(f"written to {r['out']} (MLflow run {r['run_id']})")
    if "index" in r:
        ix = r["index"]
        console.print(f"search index + {ix['added']} images: registered {ix['name']} version {ix['version']} "
                      f"as @{ix['alias']}")


@app.command()
def demo(
    preset: Preset = "demo",
    images: Annotated[int, typer.Option(help="synthetic images to generate when the data is missing")] = DEMO_IMAGES,
    test_images: TestImages = None,
    sets: Sets = None,
) -> None:
    """Generate the demo data if missing, run the pipeline, print metrics and where to look."""
    cfg = resolve(preset, None, sets)
    from mmcore.data import mirror
    from mmcore.data.records import ANNOTATIONS
    from mmcore.data.storage import Storage
    from mmcore.data.synth import generate_shapes

    cat = Catalog.from_config(cfg)
    generate = not Storage(cat.raw_uri).is_file(ANNOTATIONS)
    if not generate:
        check_source(cfg)
    api = PrefectApi.start()  # boots while the data is generated and torch is imported
    if generate:
        console.print(f"generating {images} synthetic images in {cat.raw_uri} ...")
        generate_shapes(cat.raw, images, seed=0, image_size=cfg.ingest.image_size,
                        test_images=test_split(images, test_images))
        if cat.remote_root:  # data_root is a bucket: the pipeline reads the raw dataset there
            mirror.push(cat.raw, Storage(cat.raw_uri))
    from flows.pipeline import pipeline_flow

    with running(api):
        result = pipeline_flow(cfg)
    print_metrics(result["metrics"])
    _print_next_steps(result.get("model", {}), cat.raw)


def _print_next_steps(model: dict[str, Any], raw: Path) -> None:
    console.print(f"\nregistered model {model.get('name')} version {model.get('version')} as @{model.get('alias')}"
                  + (f" ({model['reason']})" if model.get("reason") else ""))
    console.print("\nTry it:")
    console.print(f"  .venv/bin/mm caption {raw}/images/000000.png")
    console.print(f'  .venv/bin/mm ask {raw}/images/000000.png "how many shapes are there?"')
    console.print('  .venv/bin/mm search "a large red circle at the top left"')
    console.print('  .venv/bin/mm translate "a small blue square in the center" --to zh')
    console.print('  .venv/bin/mm generate "two shapes" --lang en -n 3')
    console.print("\nLook at the runs:")
    console.print(f"  MLflow:  .venv/bin/mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']} "
                  "--host 127.0.0.1 --port 5000   then open http://127.0.0.1:5000")
    console.print(f"  Prefect: PREFECT_HOME={os.environ['PREFECT_HOME']} .venv/bin/prefect server start "
                  "--host 127.0.0.1   then open http://127.0.0.1:4200")


@runs_app.command("compare")
def runs_compare(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="MLflow experiment: a dataset name "
                                                   "(default: the demo preset's)")] = None,
    metrics: Annotated[str | None, typer.Option(help="comma-separated metrics (default: the headline test "
                                                     "metrics; curves: the val_* metrics)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the newest N runs")] = 5,
    stage: Annotated[str, typer.Option(help="compare this stage's runs (pipeline: whole-pipeline runs)")] = "pipeline",
    plot: Annotated[Path | None, typer.Option(help="write the metrics' per-step curves to this image (.png)")] = None,
    model: Annotated[str | None, typer.Option(help="registered model whose aliases mark runs "
                                                   "(default mmcore-<experiment>)")] = None,
) -> None:
    """Compare runs side by side: metrics as rows, runs as columns (name, date, git commit, @champion)."""
    from mlflow.tracking import MlflowClient

    from flows import runs as runs_mod

    experiment = experiment or resolve("demo", None, None).dataset
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    client = MlflowClient()
    try:
        found = runs_mod.find_runs(client, experiment, stage, limit)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if not found:
        console.print(f"[red]no runs with tag stage={stage!r} in experiment {experiment!r}[/red]")
        raise typer.Exit(1)
    marks = runs_mod.alias_markers(client, model or f"mmcore-{experiment}")
    console.print(runs_mod.compare_table(found, names or runs_mod.default_metrics(found), marks))
    if plot:
        try:
            drawn = runs_mod.plot_curves(client, found, names, plot)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        console.print(f"curves of {', '.join(drawn)} written to {plot}")


@app.command()
def home() -> None:
    """Print where local state (MLflow store, Prefect home) lives."""
    console.print(f"MM_HOME={mm_home()}\nMLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']}\n"
                  f"PREFECT_HOME={os.environ['PREFECT_HOME']}")


USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def main() -> None:
    """The `mm` command: a user error (a bad config, source, file or parameter) is one line and exit status
    2; with --debug anywhere on the command line, its traceback instead."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except (*USER_ERRORS, CorruptOutput) as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        console.print(f"[red]error:[/red] {message}", highlight=False)
        sys.exit(1 if isinstance(exc, CorruptOutput) else 2)  # a damaged output is not a bad argument


if __name__ == "__main__":
    main()
