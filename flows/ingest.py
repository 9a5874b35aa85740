"""Ingest flow: raw dataset (canonical layout) -> sample/token/reject shards + manifest.

Run: `mm ingest --preset demo` or `python -m flows.ingest`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped

from flows.common import resolve
from mmcore.data.records import ANNOTATIONS
from tasks import ingest as T
from tasks import tracking


@flow(name="ingest")
def ingest_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                parent_run_id: str | None = None) -> str:
    """Validate, decode, resize, split and tokenize a dataset; returns the processed folder."""
    cfg, cat = resolve(preset, dataset, overrides)
    raw, out = str(cat.raw), str(cat.processed)
    if not (cat.raw / ANNOTATIONS).is_file():
        raise FileNotFoundError(f"{cat.raw / ANNOTATIONS} does not exist: put a dataset there in the canonical "
                                "layout (data/README.md) or generate one with `mm data synth`")
    with tracking.stage_run(cfg, "ingest", parent_run_id) as run_id:
        # Extract: one task per chunk of annotation lines
        chunks = T.plan(raw, cfg.ingest.shard_size)
        results = T.ingest_chunk.map(unmapped(raw), chunks, unmapped(cfg.ingest), unmapped(out)).result()
        # Transform: vocabulary from the train split, then token shards
        tokenizer = T.fit_tokenizer(results, cfg.ingest.vocab_size, out)
        T.tokenize.map(results, unmapped(tokenizer), unmapped(cfg.encoder.max_text_len)).result()
        # Load: the manifest marks the dataset complete
        T.finalize(raw, chunks, results, tokenizer, out, run_id, cfg.digest("ingest"))
    return out


if __name__ == "__main__":
    ingest_flow()
