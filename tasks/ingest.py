"""Ingest tasks: open the source, ingest it into shards, fit the tokenizer, tokenize, write the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data.ingest import IngestReport, ShardResult, ingest
from mmcore.data.shards import read_tables
from mmcore.data.sources import open_source
from mmcore.io import combined_digest
from tasks import tracking


@task
def check_source(uri: str, fmt: str) -> str:
    """Open the source and check its annotation files, failing before any work when they are malformed."""
    source = open_source(uri, fmt)
    files = source.annotation_files()
    get_run_logger().info("source %s: format %s, %d annotation file(s): %s", uri, source.format, len(files),
                          ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
    return source.format


@task(retries=2, retry_delay_seconds=[1, 5])
def ingest_source(uri: str, fmt: str, cfg: IngestConfig, out_dir: str, workers: int,
                  retry_rejected: bool) -> IngestReport:
    """Check, decode, resize, dedupe and shard every new record; a retry resumes from the finished shards."""
    logger = get_run_logger()
    (Path(out_dir) / ds.MANIFEST).unlink(missing_ok=True)  # the dataset is incomplete until finalize

    def progress(shard: ShardResult, report: IngestReport) -> None:
        logger.info("shard %s: %d accepted, %d rejected (%d records done this run)", shard.name, shard.accepted,
                    shard.rejected, report.processed)

    report = ingest(open_source(uri, fmt), out_dir, cfg, workers, retry_rejected, progress)
    logger.info("%d records in the source: %d processed now, %d kept from earlier runs, %d old rows dropped; "
                "%d accepted + %d rejected in %.1f s", report.records_in, report.processed, report.kept,
                report.dropped, report.accepted, report.rejected, report.seconds)
    return report


@task
def fit_tokenizer(report: IngestReport, vocab_size: int, out_dir: str) -> str:
    """Train the subword tokenizer on the train split's captions and questions."""
    shards = [s.samples_path for s in report.shards]
    return str(ds.fit_tokenizer(shards, vocab_size, Path(out_dir) / ds.TOKENIZER))


@task
def tokenize(shard: ShardResult, tokenizer_path: str, max_len: int) -> str:
    """Write the token shard of one sample shard."""
    return str(ds.tokenize_shard(shard.samples_path, tokenizer_path, max_len))


@task
def finalize(report: IngestReport, tokenizer_path: str, out_dir: str, run_id: str,
             config_digest: str) -> dict[str, Any]:
    """Check the record count, write the manifest last, and log counts, rejects and lineage."""
    manifest = ds.build_manifest(out_dir, report, tokenizer_path, {"ingest_config_digest": config_digest})
    tracking.log_metrics(run_id, {"records_in": manifest["records_in"], "accepted": manifest["accepted"],
                                  "rejected": manifest["rejected"], "processed": report.processed,
                                  "kept": report.kept, "dropped": report.dropped,
                                  "records_per_second": report.processed / max(report.seconds, 1e-9),
                                  **{f"split_{k}": v for k, v in manifest["splits"].items()},
                                  **{f"rejected_{k}": v for k, v in manifest["rejects_by_reason"].items()}})
    source = report.source
    tracking.log_tags(run_id, {"dataset_digest": manifest["digest"], "processed_dir": out_dir,
                               "source_format": source["format"], "source_uri": source["uri"]})
    tracking.log_dataset(run_id, f"{Path(source['uri']).name}-{source['format']}", source["uri"],
                         combined_digest(sorted(source["files"].values())), "source")
    tracking.log_dict(run_id, manifest, "manifest.json")
    tracking.log_artifact(run_id, tokenizer_path, "tokenizer")
    if manifest["rejected"]:
        rejects = read_tables([s.rejects_path for s in report.shards])
        tracking.log_table(run_id, rejects.drop_columns(["record_digest"]), "rejects.parquet")
    create_table_artifact(
        key="ingest-rejects",
        table=[{"reason": k, "records": v} for k, v in manifest["rejects_by_reason"].items()] or
              [{"reason": "(none)", "records": 0}],
        description=f"{manifest['records_in']} records in: {manifest['accepted']} accepted, "
                    f"{manifest['rejected']} rejected ({report.processed} processed by this run, "
                    f"{report.kept} kept from earlier runs)",
    )
    return manifest
