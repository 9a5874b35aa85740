"""What the `mm` commands share: their options, resolving them into one `PipelineConfig`, the console."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmcore.config import PipelineConfig, load_config
from mmcore.report import metric_rows, vqa_by_type

console = Console(soft_wrap=True)  # long commands stay on one line, ready to copy

Preset = Annotated[str, typer.Option("--preset", "-p", help="preset name (mmcore/presets) or a YAML path")]
Dataset = Annotated[str | None, typer.Option("--dataset", "-d", help="dataset name (overrides the preset)")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config value: key.sub=value")]
Source = Annotated[str | None, typer.Option(help="dataset folder, annotation file or s3:// URI "
                                                 "(default data/raw/<dataset>)")]
Format = Annotated[str | None, typer.Option("--format", help="source format (default: detect); one of jsonl, "
                                            "easy-vqa, karpathy, vqa, coco, webdataset, parquet, csv, folder")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the exit to raise (for errors that are no exception; an exception
    of a user error is printed as one line by `mm` itself, flows/cli.py: main)."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def resolve(preset: str, dataset: str | None, sets: list[str] | None, source: str | None = None,
            fmt: str | None = None) -> PipelineConfig:
    """The run's config from the command's options, resolved once. A bad option raises ValueError or
    FileNotFoundError, which `mm` prints as one line (flows/cli.py: main)."""
    overrides: dict[str, Any] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    if source:
        overrides["ingest.source"] = source
    if fmt:
        overrides["ingest.format"] = fmt
    return load_config(preset, overrides, dataset=dataset)


def refresh_stages(names: list[str] | None) -> list[str]:
    """The stages `--refresh` names (`all`: every cached stage); an unknown name is a one-line error."""
    from mmcore.stages import CACHED

    names = list(names or [])
    unknown = sorted(set(names) - {*CACHED, "all"})
    if unknown:
        raise ValueError(f"--refresh names unknown stage(s) {unknown}; choose from {[*CACHED, 'all']}")
    return list(CACHED) if "all" in names else names


def print_metrics(metrics: dict[str, float]) -> None:
    table = Table(title="Test-split metrics")
    for col in ("metric", "value", "baseline"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, value, base in metric_rows(metrics):
        table.add_row(name, f"{value:.4f}", "" if base is None else f"{base:.4f}")
    console.print(table)
    if by_type := vqa_by_type(metrics):
        console.print(by_type, highlight=False)
