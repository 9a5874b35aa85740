"""Feature extraction tasks: one frozen-encoder pass per sample shard, then the features manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mmcore import features as F
from mmcore.io import file_sha256
from mmcore.training.contrastive import load_encoder
from mmcore.training.loop import select_device
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, digest_cache


def _out_path(out_dir: str, samples_path: str) -> Path:
    return Path(out_dir) / Path(samples_path).name.replace("samples-", "features-")


def _cache_parts(p: dict) -> dict:
    return {"encoder": file_sha256(p["encoder_path"]), "samples": file_sha256(p["samples_path"]),
            "tokens": file_sha256(p["tokens_path"])}


@task(cache_key_fn=digest_cache("extract", _cache_parts, lambda p: [str(_out_path(p["out_dir"], p["samples_path"]))]),
      persist_result=True, cache_expiration=CACHE_EXPIRATION)
def extract_shard(encoder_path: str, samples_path: str, tokens_path: str, out_dir: str,
                  device: str = "auto") -> dict[str, Any]:
    """Write the feature shard of one sample shard."""
    dev = select_device(device)
    model = load_encoder(encoder_path, dev)
    out = _out_path(out_dir, samples_path)
    return F.extract_shard(model, samples_path, tokens_path, out, file_sha256(encoder_path), dev)


@task
def finalize(out_dir: str, shards: list[dict[str, Any]], encoder_path: str, processed_dir: str,
             run_id: str) -> dict[str, Any]:
    """Write the features manifest (last) and log it."""
    manifest = F.write_manifest(out_dir, shards, encoder_path, processed_dir)
    tracking.log_metrics(run_id, {"feature_rows": manifest["rows"],
                                  "feature_shards_reused": sum(bool(s.get("skipped")) for s in shards)})
    tracking.log_tags(run_id, {"features_digest": manifest["digest"], "features_dir": out_dir,
                               "dataset_digest": manifest["processed_digest"]})
    tracking.log_dict(run_id, manifest, "features_manifest.json")
    tracking.log_dataset(run_id, f"{Path(processed_dir).parent.name}-samples", processed_dir,
                         manifest["processed_digest"], "extract")
    return manifest
