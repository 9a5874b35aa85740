"""The extract benchmark's data (bench/extract_bench.py), made before any timing: the processed dataset,
ingested once and cached, and the pre-made tensors of the raw forward pass."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bench.machine import log
from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.data.shards import decode_png
from mmcore.data.synth import generate_shapes
from mmcore.features import caption_batches
from mmcore.stages import ingest
from mmcore.training.loop import pad_batch

IMAGE_SIZE = 64
BATCH = 256  # extract_shard's default, which the extract stage uses


def processed_dataset(work: Path, n: int) -> tuple[PipelineConfig, Catalog]:
    """The demo preset over `n` shapes images under `work`, ingested by the ingest stage once and cached."""
    cfg = load_config("demo", {"data_root": str(work / f"shapes-{n}"), "ingest.image_size": IMAGE_SIZE,
                               "ingest.shard_size": 1000})
    cat = Catalog.from_config(cfg)
    if not cat.processed.manifest.exists():  # written last by the ingest stage: the dataset is complete
        shutil.rmtree(cat.raw, ignore_errors=True)  # what a killed run left
        t0 = time.perf_counter()
        generate_shapes(cat.raw, n, seed=0, image_size=IMAGE_SIZE)
        log(f"  generated {n} shapes images in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        result = ingest.run(cfg, cat, workers=2)
        log(f"  ingested: {result.accepted} accepted, {result.rejected} rejected, "
            f"{len(cat.processed.entries())} shards in {time.perf_counter() - t0:.0f} s")
    return cfg, cat


Batches = list[tuple[list[torch.Tensor], list[torch.Tensor]]]  # per shard: image batches, caption batches


def premade_batches(cat: Catalog, shards: list[int], pad_id: int) -> tuple[Batches, Batches]:
    """Per shard: the image batches (B, 3, S, S) uint8 and caption batches (B, T) long extract_shard makes,
    and the same with the caption batches in shard order (the stage's batching before it sorted)."""
    stage, shard_order = [], []
    for index in shards:
        blobs = pq.read_table(cat.processed.samples(index), columns=["image"])["image"].to_pylist()
        images = torch.from_numpy(np.stack([decode_png(b) for b in blobs]))  # one uint8 tensor per shard
        image_batches = [images[i : i + BATCH] for i in range(0, len(images), BATCH)]
        column = pq.read_table(cat.processed.tokens(index), columns=["caption_ids"])["caption_ids"]
        stage.append((image_batches, caption_batches(column, pad_id, BATCH)[1]))
        flat = [caption for caps in column.to_pylist() for caption in caps]
        text_batches = [pad_batch(flat[i : i + BATCH], pad_id) for i in range(0, len(flat), BATCH)]
        shard_order.append((image_batches, text_batches))
    return stage, shard_order
