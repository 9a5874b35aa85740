"""The `mm` command line.

    mm demo                                  synthetic data + the whole pipeline + a results table
    mm data synth --out data/raw/shapes --images 3000 --test-images 1000
    mm pipeline --preset demo --set pretrain.epochs=4
    mm data fetch easy-vqa                   the easy-VQA dataset into data/raw/easy-vqa
    mm ingest --dataset easy-vqa             ingest any supported format (--source, --format, --retry-rejected)
    mm data rejects --dataset easy-vqa       what the last ingest rejected, and why
    mm pretrain | extract | train | evaluate one stage (same options)
    mm caption IMAGE / mm ask IMAGE "QUESTION" / mm search "TEXT"   use the @champion model
    mm translate "a red circle on the left" --to zh / mm generate "two shapes" --lang en
    mm runs compare --metrics t2i_r1,vqa_acc --limit 3 --plot runs.png   the newest pipeline runs side by side
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import flows  # noqa: F401  (sets the embedded defaults before Prefect is imported)
from flows.api import PrefectApi
from flows.env import mm_home
from mmcore.catalog import Catalog
from mmcore.config import load_config

app = typer.Typer(help="Multimodal pipelines: ingest, pretrain, extract, train, evaluate, serve.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
runs_app = typer.Typer(help="MLflow runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
console = Console(soft_wrap=True)  # long commands stay on one line, ready to copy

DEMO_IMAGES = 3000
DEMO_TEST_IMAGES = 1000  # the demo's test split: the last 1,000 images
TestImages = Annotated[int | None, typer.Option(
    help="the last N images form the test split (0: split by content; default: a third, at most 1,000)")]


def _test_images(images: int, test_images: int | None) -> int:
    return min(DEMO_TEST_IMAGES, images // 3) if test_images is None else test_images
Preset = Annotated[str, typer.Option("--preset", "-p", help="preset name (mmcore/presets) or a YAML path")]
Dataset = Annotated[str | None, typer.Option("--dataset", "-d", help="dataset name (overrides the preset)")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config value: key.sub=value")]
Refresh = Annotated[list[str] | None, typer.Option(
    "--refresh", metavar="STAGE", help="run this stage even when its cached result is valid (pretrain, extract, "
                                       "train, evaluate or all; repeatable)")]
ModelUri = Annotated[str | None, typer.Option("--model", "-m",
                                              help="model URI (default models:/mmcore-<dataset>@champion)")]


def _overrides(sets: list[str] | None) -> dict[str, Any] | None:
    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out or None


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset to fetch: easy-vqa")],
    out: Annotated[Path | None, typer.Option(help="output folder (default data/raw/<name>)")] = None,
) -> None:
    """Download a public dataset from the package registry into its native layout (no package is installed)."""
    from mmcore.data.fetch import fetch_easy_vqa

    fetchers = {"easy-vqa": fetch_easy_vqa}
    if name not in fetchers:
        raise typer.BadParameter(f"unknown dataset {name!r}; valid: {', '.join(fetchers)}")
    dest = out or Path(load_config("demo").data_root) / "raw" / name
    counts = fetchers[name](dest)
    console.print(f"{name}: {counts['images']} images, {counts['questions']} questions in {dest}\n"
                  f"ingest it with: mm ingest --dataset {name}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="output folder (canonical layout)")] = Path("data/raw/shapes"),
    images: Annotated[int, typer.Option(help="number of images")] = DEMO_IMAGES,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same files")] = 0,
    image_size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    test_images: TestImages = None,
) -> None:
    """Generate the synthetic shapes dataset (images, English + Chinese captions, QA pairs)."""
    from mmcore.data.synth import generate_shapes

    s = generate_shapes(out, images, seed, image_size, _test_images(images, test_images))
    console.print(f"wrote {s.images} images, {s.captions} captions, {s.questions} questions to {s.root}")


def _stage(name: str):
    def run(preset: Preset = "demo", dataset: Dataset = None, sets: Sets = None,
            refresh: Annotated[bool, typer.Option("--refresh", help="run the stage even when its cached result "
                                                  "(same inputs, config and code) is still valid")] = False) -> None:
        api = PrefectApi.start()
        from flows import evaluate, extract, ingest, pretrain, train
        from flows.common import stage_flow

        fn = {"ingest": ingest.ingest_flow, "pretrain": pretrain.pretrain_flow, "extract": extract.extract_flow,
              "train": train.train_flow, "evaluate": evaluate.evaluate_flow}[name]
        fn = stage_flow(fn, preset, dataset, _overrides(sets))  # orchestration.task_runner
        with api:
            result = fn(preset=preset, dataset=dataset, overrides=_overrides(sets), refresh=refresh)
        if isinstance(result, dict) and "metrics" in result:
            _print_metrics(result["metrics"])
        else:
            console.print(result)

    run.__doc__ = f"Run the {name} stage flow."
    return run


for _name in ("pretrain", "extract", "train", "evaluate"):
    app.command(_name)(_stage(_name))


Source = Annotated[str | None, typer.Option(help="dataset folder, annotation file or s3:// URI "
                                                 "(default data/raw/<dataset>)")]
Format = Annotated[str | None, typer.Option("--format", help="source format (default: detect); one of jsonl, "
                                            "easy-vqa, vqa, coco, webdataset, parquet, csv, folder")]


def _source_overrides(sets: list[str] | None, source: str | None, fmt: str | None) -> dict[str, Any] | None:
    overrides = _overrides(sets) or {}
    if source:
        overrides["ingest.source"] = source
    if fmt:
        overrides["ingest.format"] = fmt
    return overrides or None


@data_app.command("rejects")
def data_rejects(
    preset: Preset = "demo",
    dataset: Dataset = None,
    sets: Sets = None,
    source: Source = None,
    fmt: Format = None,
    reason: Annotated[str | None, typer.Option(help="only this reason code (e.g. missing_file)")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
) -> None:
    """Show what the last ingest of a dataset rejected, and why (same options as `mm ingest`)."""
    from mmcore.data import mirror
    from mmcore.data.dataset import MANIFEST, read_manifest
    from mmcore.data.shards import read_tables
    from mmcore.data.storage import Storage

    cfg = load_config(preset, _source_overrides(sets, source, fmt), dataset=dataset)
    cat = Catalog.from_config(cfg)
    processed = cat.processed
    if (remote := cat.remote_of(processed)) is not None:  # data_root is a bucket: the manifest and reject shards
        mirror.pull(Storage(remote), processed, only=[MANIFEST])
        mirror.pull(Storage(remote), processed, only=[s["rejects"] for s in read_manifest(processed)["shards"]])
    m = read_manifest(processed)
    rows = read_tables([processed / s["rejects"] for s in m["shards"]]).to_pylist()
    rows = [r for r in rows if reason is None or r["reason"] == reason]
    console.print(f"{m['rejected']} of {m['records_in']} records rejected: "
                  + (", ".join(f"{k} {v}" for k, v in m["rejects_by_reason"].items()) or "none"))
    table = Table(title=f"rejects{f' ({reason})' if reason else ''}: {min(limit, len(rows))} of {len(rows)}")
    for col in ("where", "sample", "reason", "message"):
        table.add_column(col)
    for r in rows[:limit]:
        message = r["message"] + (f" (kept: {r['duplicate_of']})" if r["duplicate_of"] else "")
        table.add_row(r["where"], r["sample_id"] or "", r["reason"], message)
    console.print(table)


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
    api = PrefectApi.start()
    from flows.common import stage_flow
    from flows.ingest import ingest_flow
    from mmcore.data.dataset import read_manifest

    overrides = _source_overrides(sets, source, fmt)
    with api:
        out = stage_flow(ingest_flow, preset, dataset, overrides)(preset=preset, dataset=dataset,
                                                                   overrides=overrides, workers=workers,
                                                                   retry_rejected=retry_rejected)
    m = read_manifest(out)
    table = Table(title=f"ingested {m['source']['uri']} ({m['source']['format']})")
    for col in ("records in", "accepted", "rejected", "processed now", "kept", "dropped"):
        table.add_column(col, justify="right")
    run = m["last_run"]
    table.add_row(*map(str, (m["records_in"], m["accepted"], m["rejected"], run["processed"], run["kept"],
                             run["dropped"])))
    console.print(table)
    if m["rejects_by_reason"]:
        console.print("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in m["rejects_by_reason"].items()))
    console.print(f"splits: {m['splits']}; accepted records hold {m['texts']['captions']} captions and "
                  f"{m['texts']['questions']} questions\nshards, rejects and manifest: {out}")


@app.command()
def pipeline(preset: Preset = "demo", dataset: Dataset = None, sets: Sets = None, refresh: Refresh = None) -> None:
    """Run the whole pipeline flow."""
    api = PrefectApi.start()
    from flows.pipeline import pipeline_flow

    with api:
        result = pipeline_flow(preset=preset, dataset=dataset, overrides=_overrides(sets), refresh=refresh)
    _print_metrics(result["metrics"])


@app.command()
def demo(
    preset: Preset = "demo",
    images: Annotated[int, typer.Option(help="synthetic images to generate when the data is missing")] = DEMO_IMAGES,
    test_images: TestImages = None,
    sets: Sets = None,
) -> None:
    """Generate the demo data if missing, run the pipeline, print metrics and where to look."""
    api = PrefectApi.start()
    from flows.pipeline import pipeline_flow
    from mmcore.data import mirror
    from mmcore.data.records import ANNOTATIONS
    from mmcore.data.storage import Storage
    from mmcore.data.synth import generate_shapes

    cfg = load_config(preset, _overrides(sets))
    cat = Catalog.from_config(cfg)
    raw = cat.raw
    if not Storage(cat.raw_uri).is_file(ANNOTATIONS):
        console.print(f"generating {images} synthetic images in {cat.raw_uri} ...")
        generate_shapes(raw, images, seed=0, image_size=cfg.ingest.image_size,
                        test_images=_test_images(images, test_images))
        if cat.remote_root:  # data_root is a bucket: the pipeline reads the raw dataset there
            mirror.push(raw, Storage(cat.raw_uri))
    with api:
        result = pipeline_flow(preset=preset, overrides=_overrides(sets))
    _print_metrics(result["metrics"])
    model = result.get("model", {})
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


def _print_metrics(metrics: dict[str, float]) -> None:
    from tasks.evaluation import metric_rows

    table = Table(title="Test-split metrics")
    for col in ("metric", "value", "baseline"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, value, base in metric_rows(metrics):
        table.add_row(name, f"{value:.4f}", "" if base is None else f"{base:.4f}")
    console.print(table)


def _predict(model: str | None, dataset: str, rows: list[dict[str, Any]], params: dict[str, Any] | None = None):
    import pandas as pd

    from tasks.registry import load_model

    uri = model or f"models:/{load_config('demo', dataset=dataset).model_name}@champion"
    try:
        loaded = load_model(uri)
    except Exception as exc:  # MLflow raises its own types for a missing model or alias
        console.print(f"[red]could not load {uri}: {exc}[/red]\nRun `mm demo` or `mm pipeline` first.")
        raise typer.Exit(1) from exc
    return loaded.predict(pd.DataFrame(rows), params=params)


def _image_b64(path: Path) -> str:
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    return base64.b64encode(path.read_bytes()).decode()


DatasetName = Annotated[str, typer.Option("--dataset", "-d", help="dataset whose champion to use")]


@app.command()
def caption(image: Path, model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Caption an image with the champion model."""
    out = _predict(model, dataset, [{"task": "caption", "image": _image_b64(image)}])
    console.print(out["answer"][0])


@app.command()
def ask(image: Path, question: str, model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Answer a question about an image with the champion model."""
    out = _predict(model, dataset, [{"task": "ask", "image": _image_b64(image), "question": question}])
    console.print(f"{out['answer'][0]}  (p={out['score'][0]:.2f})")


@app.command()
def search(text: str, k: Annotated[int, typer.Option("-k", help="results to show")] = 5,
           model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Find the dataset images that best match a text."""
    out = _predict(model, dataset, [{"task": "search", "text": text}], {"k": k})
    table = Table(title=f"images matching {text!r}")
    for col in ("rank", "score", "sample", "image"):
        table.add_column(col)
    for rank, m in enumerate(json.loads(out["matches"][0]), 1):
        table.add_row(str(rank), f"{m['score']:.3f}", m["sample_id"], m["image_path"])
    console.print(table)


@app.command()
def translate(text: str, to: Annotated[str, typer.Option("--to", help="target language, e.g. en or zh")] = "zh",
              model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Translate a caption between the model's caption languages (English <-> Chinese on the demo)."""
    out = _predict(model, dataset, [{"task": "translate", "text": text, "lang": to}])
    console.print(out["answer"][0])


@app.command()
def generate(prompt: str, lang: Annotated[str, typer.Option(help="language to write")] = "en",
             n: Annotated[int, typer.Option("-n", help="texts to sample")] = 3,
             temperature: Annotated[float, typer.Option(help="> 1 more varied, < 1 more likely text")] = 1.0,
             top_k: Annotated[int, typer.Option(help="sample among the k likeliest tokens (0: all)")] = 0,
             top_p: Annotated[float, typer.Option(help="nucleus sampling mass (1: off)")] = 0.9,
             seed: Annotated[int, typer.Option(help="-1: a different draw every time")] = -1,
             model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Continue a prompt with the champion model's text generator."""
    params = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    out = _predict(model, dataset, [{"task": "generate", "text": prompt, "lang": lang}] * n, params)
    for text in out["answer"]:
        console.print(text)


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

    experiment = experiment or load_config("demo").dataset
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


if __name__ == "__main__":
    app()
