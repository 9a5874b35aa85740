"""Frozen-encoder feature extraction into Parquet shards, and loading them back for the heads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mmcore.data.dataset import read_manifest
from mmcore.data.shards import (
    decode_png,
    features_schema,
    read_metadata,
    read_tables,
    vector_lists,
    vector_lists_to_numpy,
    vectors,
    vectors_to_numpy,
    write_table,
)
from mmcore.io import combined_digest, file_sha256, read_json, write_json
from mmcore.models.contrastive import DualEncoder
from mmcore.training.loop import pad_batch

MANIFEST = "manifest.json"


@torch.no_grad()
def extract_shard(model: DualEncoder, samples_path: str | Path, tokens_path: str | Path, out_path: str | Path,
                  encoder_sha256: str, device: torch.device, batch_size: int = 256) -> dict[str, Any]:
    """Writes one feature shard per sample shard, row-aligned with it; kept on rerun if inputs match."""
    out_path = Path(out_path)
    spec = {"samples": file_sha256(samples_path), "encoder": encoder_sha256}
    if out_path.exists() and read_metadata(out_path).get("spec") == spec:
        return {"path": out_path.name, "rows": pq.read_metadata(out_path).num_rows, "skipped": True}
    model.eval()
    samples = pq.read_table(samples_path, columns=["sample_id", "split", "image", "captions"])
    caption_ids = pq.read_table(tokens_path, columns=["caption_ids"])["caption_ids"].to_pylist()
    blobs = samples["image"].to_pylist()
    emb, pooled, grid = [], [], []
    for i in range(0, len(blobs), batch_size):
        images = torch.from_numpy(np.stack([decode_png(b) for b in blobs[i : i + batch_size]])).to(device)
        out = model.encode_image(images)
        emb.append(out.embedding.cpu())
        pooled.append(out.pooled.cpu())
        grid.append(out.grid.flatten(1).cpu())  # (B, C*g*g)
    flat = [ids for caps in caption_ids for ids in caps]
    txt = [model.encode_text(pad_batch(flat[i : i + batch_size]).to(device)).cpu()
           for i in range(0, len(flat), batch_size)]
    txt_all = torch.cat(txt).numpy() if txt else np.zeros((0, model.image_proj.out_features), np.float32)
    text_rows = vector_lists(txt_all, [len(caps) for caps in caption_ids])
    enc = model.image_encoder
    schema = features_schema(model.image_proj.out_features, enc.out_channels, enc.grid_channels, enc.grid**2)
    cat = lambda parts: torch.cat(parts).numpy() if parts else np.zeros((0, 1), np.float32)  # noqa: E731
    columns = {
        "sample_id": samples["sample_id"],
        "split": samples["split"],
        "image_embedding": vectors(cat(emb)),
        "image_pooled": vectors(cat(pooled)),
        "image_grid": vectors(cat(grid)),
        "text_embeddings": text_rows,
        "caption_langs": [[c["lang"] for c in caps] for caps in samples["captions"].to_pylist()],
    }
    write_table(out_path, pa.table(columns, schema=schema), {"spec": spec, "cells": enc.grid**2})
    return {"path": out_path.name, "rows": len(blobs), "skipped": False}


def write_manifest(features_dir: str | Path, shards: list[dict[str, Any]], encoder_path: str | Path,
                   processed_dir: str | Path) -> dict[str, Any]:
    features_dir = Path(features_dir)
    digests = [file_sha256(features_dir / s["path"]) for s in shards]
    manifest = {
        "shards": [{"path": s["path"], "rows": s["rows"], "sha256": d} for s, d in zip(shards, digests, strict=True)],
        "rows": sum(s["rows"] for s in shards),
        "encoder": str(encoder_path),
        "encoder_sha256": file_sha256(encoder_path),
        "processed": str(processed_dir),
        "processed_digest": read_manifest(processed_dir)["digest"],
        "digest": combined_digest(digests),
    }
    write_json(features_dir / MANIFEST, manifest)
    return manifest


@dataclass
class FeatureSet:
    """Frozen features of some splits plus the texts and tokens the heads learn from."""

    sample_ids: list[str]
    image_embedding: np.ndarray  # (N, D)
    pooled: np.ndarray  # (N, C)
    grid: np.ndarray  # (N, C, g*g)
    text_embeddings: list[np.ndarray]  # per sample (captions, D)
    captions: list[list[dict]]
    caption_ids: list[list[list[int]]]
    qa: list[list[dict]]
    question_ids: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.sample_ids)


def load_features(features_dir: str | Path, processed_dir: str | Path, splits: tuple[str, ...]) -> FeatureSet:
    features_dir, processed_dir = Path(features_dir), Path(processed_dir)
    fman = read_json(features_dir / MANIFEST)
    pman = read_manifest(processed_dir)
    feats = read_tables([features_dir / s["path"] for s in fman["shards"]])
    samples = read_tables([processed_dir / s["samples"] for s in pman["shards"]],
                          columns=["sample_id", "captions", "qa"])
    tokens = read_tables([processed_dir / s["tokens"] for s in pman["shards"]], columns=["caption_ids", "question_ids"])
    if feats["sample_id"].to_pylist() != samples["sample_id"].to_pylist():
        raise RuntimeError(f"feature shards in {features_dir} do not match the samples in {processed_dir}; "
                           "re-run the extract stage")
    mask = pc.is_in(feats["split"], pa.array(list(splits)))
    feats, samples, tokens = feats.filter(mask), samples.filter(mask), tokens.filter(mask)
    cells = int(read_metadata(features_dir / fman["shards"][0]["path"])["cells"]) if fman["shards"] else 1
    grid = vectors_to_numpy(feats["image_grid"])
    return FeatureSet(
        sample_ids=feats["sample_id"].to_pylist(),
        image_embedding=vectors_to_numpy(feats["image_embedding"]),
        pooled=vectors_to_numpy(feats["image_pooled"]),
        grid=grid.reshape(len(grid), -1, cells),  # (N, G, cells)
        text_embeddings=vector_lists_to_numpy(feats["text_embeddings"]),
        captions=samples["captions"].to_pylist(),
        caption_ids=tokens["caption_ids"].to_pylist(),
        qa=samples["qa"].to_pylist(),
        question_ids=tokens["question_ids"].to_pylist(),
    )


def image_index(features_dir: str | Path, processed_dir: str | Path) -> pa.Table:
    """sample_id, image_path, image_embedding of every extracted image: what text search ranks."""
    fman = read_json(Path(features_dir) / MANIFEST)
    pman = read_manifest(processed_dir)
    feats = read_tables([Path(features_dir) / s["path"] for s in fman["shards"]], ["sample_id", "image_embedding"])
    paths = read_tables([Path(processed_dir) / s["samples"] for s in pman["shards"]], ["image_path"])
    return feats.append_column("image_path", paths["image_path"]).select(["sample_id", "image_path", "image_embedding"])
