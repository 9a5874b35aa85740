"""`mm data fetch / synth / photos / rejects`: datasets in, and what an ingest rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_options import Dataset, Format, Preset, Sets, Source, console, fail, resolve
from mmcore.catalog import Catalog

data_app = typer.Typer(help="Datasets.", no_args_is_help=True)

DEMO_IMAGES = 3000
PHOTO_IMAGES = 240  # the photos fixture: a few hundred photo-sized JPEGs, ~25 MB
DEMO_TEST_IMAGES = 1000  # the demo's test split: the last 1,000 images
TestImages = Annotated[int | None, typer.Option(
    help="the last N images form the test split (0: split by content; default: a third, at most 1,000)")]


def test_split(images: int, test_images: int | None) -> int:
    """How many of `images` form the test split: `test_images`, else a third, at most DEMO_TEST_IMAGES."""
    return min(DEMO_TEST_IMAGES, images // 3) if test_images is None else test_images


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset to fetch: easy-vqa")],
    out: Annotated[Path | None, typer.Option(help="output folder (default data/raw/<name>)")] = None,
) -> None:
    """Download a public dataset from the package registry into its native layout (no package is installed)."""
    from mmcore.data.fetch import fetch_easy_vqa

    fetchers = {"easy-vqa": fetch_easy_vqa}
    if name not in fetchers:
        raise fail(f"unknown dataset {name!r}; valid: {', '.join(fetchers)}")
    dest = out or Catalog.from_config(resolve("demo", name, None)).raw
    counts = fetchers[name](dest)
    console.print(f"{name}: {counts['images']} images, {counts['questions']} questions in {dest}\n"
                  f"ingest it with: mm ingest --dataset {name}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path | None, typer.Option(help="output folder (default data/raw/shapes)")] = None,
    images: Annotated[int, typer.Option(help="number of images")] = DEMO_IMAGES,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same files")] = 0,
    image_size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    test_images: TestImages = None,
) -> None:
    """Generate the synthetic shapes dataset (images, English + Chinese captions, QA pairs)."""
    from mmcore.data.synth import generate_shapes

    out = out or Catalog.from_config(resolve("demo", "shapes", None)).raw
    s = generate_shapes(out, images, seed, image_size, test_split(images, test_images))
    console.print(f"wrote {s.images} images, {s.captions} captions, {s.questions} questions to {s.root}")


@data_app.command("photos")
def data_photos(
    out: Annotated[Path | None, typer.Option(help="output folder (default data/raw/photos)")] = None,
    images: Annotated[int, typer.Option(help="number of pictures")] = PHOTO_IMAGES,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same files")] = 0,
) -> None:
    """Generate the photos fixture: photo-sized JPEGs (some EXIF-rotated, greyscale or CMYK) with five captions
    and VQA questions each, as COCO captions, VQA v2 and Karpathy splits (dataset_coco.json)."""
    from mmcore.data.photos import generate_photos

    default = Catalog.from_config(resolve("photos", None, None)).raw
    s = generate_photos(out or default, images, seed)
    where = "" if out is None or out.resolve() == default.resolve() else f" --set ingest.source={out}"
    console.print(f"wrote {s.images} pictures, {s.captions} captions, {s.questions} questions to {s.root}\n"
                  f"run it with: mm pipeline --preset photos{where}")


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
    from mmcore.data.dataset import read_manifest
    from mmcore.data.storage import Storage
    from mmcore.stages.ingest import rejects

    cat = Catalog.from_config(resolve(preset, dataset, sets, source, fmt))
    processed = cat.processed
    if (remote := cat.remote_of(processed)) is not None:  # data_root is a bucket: the manifest and reject shards
        mirror.pull(Storage(remote), processed, only=[processed.manifest.name])
        mirror.pull(Storage(remote), processed, only=[p.name for p in processed.listed("rejects")])
    try:
        m = read_manifest(processed)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    rows = [r for r in rejects(cat).to_pylist() if reason is None or r["reason"] == reason]
    console.print(f"{m['rejected']} of {m['records_in']} records rejected: "
                  + (", ".join(f"{k} {v}" for k, v in m["rejects_by_reason"].items()) or "none"))
    table = Table(title=f"rejects{f' ({reason})' if reason else ''}: {min(limit, len(rows))} of {len(rows)}")
    for col in ("where", "sample", "reason", "message"):
        table.add_column(col)
    for r in rows[:limit]:
        message = r["message"] + (f" (kept: {r['duplicate_of']})" if r["duplicate_of"] else "")
        table.add_row(r["where"], r["sample_id"] or "", r["reason"], message)
    console.print(table)
