"""The last step of an ingest: the tokenizer learned from the train split, a token shard per sample shard,
and the manifest that marks the dataset complete."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest.steps import IngestReport
from mmcore.data.shards import TOKENS, read_metadata, write_table
from mmcore.io import combined_digest, file_sha256, write_json
from mmcore.text.tokenizer import TextTokenizer


def training_texts(sample_shards: list[str]) -> Iterator[str]:
    """Captions and questions of the train split, one shard at a time: what the tokenizer learns from."""
    count = 0
    for path in sample_shards:
        table = pq.read_table(path, columns=["split", "captions", "qa"])
        table = table.filter(pc.equal(table["split"], "train"))
        for caps in table["captions"].to_pylist():
            for c in caps:
                count += 1
                yield c["text"]
        for qas in table["qa"].to_pylist():
            for q in qas:
                count += 1
                yield q["question"]
    if not count:
        raise ValueError("the train split is empty: no texts to train the tokenizer on")


def fit_tokenizer(sample_shards: list[str], vocab_size: int, out_path: str | Path) -> Path:
    """Trains the tokenizer on the train split of `sample_shards` and saves it to `out_path` (in the
    pipeline: `ProcessedDir.tokenizer`)."""
    return TextTokenizer.train(training_texts(sample_shards), vocab_size).save(out_path)


def tokenize_shard(processed: ProcessedDir, index: int, max_len: int) -> Path:
    """Writes the token shard of sample shard `index` with the dataset's tokenizer; kept on rerun when its
    inputs are unchanged."""
    samples_path, tokenizer_path, out = processed.samples(index), processed.tokenizer, processed.tokens(index)
    spec = {"samples": file_sha256(samples_path), "tokenizer": file_sha256(tokenizer_path), "max_len": max_len}
    if out.exists() and _spec(out) == spec:
        return out
    tok = TextTokenizer.from_file(tokenizer_path)
    table = pq.read_table(samples_path, columns=["sample_id", "captions", "qa"])
    caps = table["captions"].to_pylist()
    qas = table["qa"].to_pylist()
    flat_caps = tok.encode([c["text"] for row in caps for c in row], max_len) if caps else []
    flat_qs = tok.encode([q["question"] for row in qas for q in row], max_len) if qas else []
    caption_ids, question_ids, i, j = [], [], 0, 0
    for row_caps, row_qas in zip(caps, qas, strict=True):
        caption_ids.append(flat_caps[i : i + len(row_caps)])
        question_ids.append(flat_qs[j : j + len(row_qas)])
        i, j = i + len(row_caps), j + len(row_qas)
    tokens = pa.table({"sample_id": table["sample_id"], "caption_ids": caption_ids, "question_ids": question_ids},
                      schema=TOKENS)
    return write_table(out, tokens, {"spec": spec})


def _spec(tokens: Path) -> dict[str, Any] | None:
    """What the token shard was made from; None when it cannot be read (damaged: it is written again)."""
    try:
        return read_metadata(tokens).get("spec")
    except (pa.ArrowException, OSError, ValueError):
        return None


def build_manifest(processed: ProcessedDir, report: IngestReport, extra: dict[str, Any]) -> dict[str, Any]:
    """Checks that records in = accepted + rejected, then writes the manifest (last: marks completion) of the
    shards in `report` and the tokenizer."""
    accepted = sum(s.accepted for s in report.shards)
    rejected = sum(s.rejected for s in report.shards)
    if accepted + rejected != report.records_in:
        raise RuntimeError(f"record count mismatch: {report.records_in} in, {accepted} accepted + {rejected} rejected")
    shards, reasons, texts = [], Counter(), Counter()
    for r in sorted(report.shards, key=lambda r: r.index):
        samples, tokens, rejects = processed.samples(r.index), processed.tokens(r.index), processed.rejects(r.index)
        table = pq.read_table(samples, columns=["split", "captions", "qa"])
        splits = Counter(table["split"].to_pylist())
        for column, name in (("captions", "captions"), ("qa", "questions")):
            texts[name] += pc.sum(pc.list_value_length(table[column])).as_py() or 0
        reasons.update(pq.read_table(rejects, columns=["reason"])["reason"].to_pylist())
        shards.append({
            "samples": samples.name, "tokens": tokens.name, "rejects": rejects.name,
            "rows": r.accepted, "rejected": r.rejected, "splits": dict(sorted(splits.items())),
            "samples_sha256": file_sha256(samples), "tokens_sha256": file_sha256(tokens),
            "rejects_sha256": file_sha256(rejects),  # each file's digest: a rerun rebuilds what was damaged
        })
    manifest = {
        "source": report.source,
        "records_in": report.records_in,
        "accepted": accepted,
        "rejected": rejected,
        "rejects_by_reason": dict(sorted(reasons.items())),
        "splits": dict(sorted(sum((Counter(s["splits"]) for s in shards), Counter()).items())),
        "texts": {"captions": texts["captions"], "questions": texts["questions"]},  # in accepted records
        "shards": shards,
        "tokenizer": processed.tokenizer.name,
        "tokenizer_sha256": file_sha256(processed.tokenizer),
        "digest": combined_digest([s["samples_sha256"] for s in shards] + [file_sha256(processed.tokenizer)]),
        **extra,
    }
    write_json(processed.manifest, manifest)
    return manifest
