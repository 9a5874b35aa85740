"""Ingest tasks: plan chunks, process each chunk into shards, fit the tokenizer, tokenize, write the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data.ingest import Chunk, ChunkResult, plan_chunks, process_chunk
from mmcore.data.records import ANNOTATIONS
from mmcore.data.shards import read_tables
from tasks import tracking


@task(retries=2, retry_delay_seconds=[1, 5])
def plan(raw_root: str, shard_size: int) -> list[Chunk]:
    """Cut the annotation file into chunks of lines, one per future shard."""
    return plan_chunks(Path(raw_root) / ANNOTATIONS, shard_size)


@task(retries=2, retry_delay_seconds=[1, 5])
def ingest_chunk(raw_root: str, chunk: Chunk, cfg: IngestConfig, out_dir: str) -> ChunkResult:
    """Validate, decode and resize one chunk's images into a sample shard and a reject shard."""
    return process_chunk(raw_root, chunk, cfg, out_dir)


@task
def fit_tokenizer(results: list[ChunkResult], vocab_size: int, out_dir: str) -> str:
    """Train the subword tokenizer on the train split's captions and questions."""
    return str(ds.fit_tokenizer([r.samples_path for r in results], vocab_size, Path(out_dir) / ds.TOKENIZER))


@task
def tokenize(result: ChunkResult, tokenizer_path: str, max_len: int) -> str:
    """Write the token shard of one sample shard."""
    return str(ds.tokenize_shard(result.samples_path, tokenizer_path, max_len))


@task
def finalize(raw_root: str, chunks: list[Chunk], results: list[ChunkResult], tokenizer_path: str,
             out_dir: str, run_id: str, config_digest: str) -> dict[str, Any]:
    """Check the record count, write the manifest last, and log counts, rejects and lineage."""
    annotations = Path(raw_root) / ANNOTATIONS
    manifest = ds.build_manifest(out_dir, results, sum(c.records for c in chunks), annotations,
                                 tokenizer_path, {"ingest_config_digest": config_digest})
    tracking.log_metrics(run_id, {"records_in": manifest["records_in"], "accepted": manifest["accepted"],
                                  "rejected": manifest["rejected"],
                                  **{f"split_{k}": v for k, v in manifest["splits"].items()},
                                  **{f"rejected_{k}": v for k, v in manifest["rejects_by_reason"].items()}})
    tracking.log_tags(run_id, {"dataset_digest": manifest["digest"], "processed_dir": out_dir})
    tracking.log_dataset(run_id, f"{Path(raw_root).name}-raw", annotations, manifest["annotations_sha256"], "source")
    tracking.log_dict(run_id, manifest, "manifest.json")
    tracking.log_artifact(run_id, tokenizer_path, "tokenizer")
    rejects = read_tables([r.rejects_path for r in results]).to_pylist() if manifest["rejected"] else []
    if rejects:
        tracking.log_dict(run_id, rejects, "rejects.json")
    create_table_artifact(
        key="ingest-rejects",
        table=[{"reason": k, "records": v} for k, v in manifest["rejects_by_reason"].items()] or
              [{"reason": "(none)", "records": 0}],
        description=f"{manifest['records_in']} records in: {manifest['accepted']} accepted, "
                    f"{manifest['rejected']} rejected",
    )
    return manifest
