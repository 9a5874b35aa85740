"""The processed dataset: tokenizer, token shards, manifest, and loading splits for training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcore.data.ingest import IngestReport
from mmcore.data.shards import TOKENS, decode_png, read_metadata, read_tables, write_table
from mmcore.io import combined_digest, file_sha256, read_json, write_json
from mmcore.text.tokenizer import TextTokenizer

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"


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
    return TextTokenizer.train(training_texts(sample_shards), vocab_size).save(out_path)


def tokenize_shard(samples_path: str | Path, tokenizer_path: str | Path, max_len: int) -> Path:
    """Writes tokens-XXXXX.parquet beside a sample shard; kept on rerun when inputs are unchanged."""
    samples_path = Path(samples_path)
    out = samples_path.with_name(samples_path.name.replace("samples-", "tokens-"))
    spec = {"samples": file_sha256(samples_path), "tokenizer": file_sha256(tokenizer_path), "max_len": max_len}
    if out.exists() and read_metadata(out).get("spec") == spec:
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


def build_manifest(out_dir: str | Path, report: IngestReport, tokenizer_path: str | Path,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """Checks that records in = accepted + rejected, then writes manifest.json (last: marks completion)."""
    out_dir = Path(out_dir)
    accepted = sum(s.accepted for s in report.shards)
    rejected = sum(s.rejected for s in report.shards)
    if accepted + rejected != report.records_in:
        raise RuntimeError(f"record count mismatch: {report.records_in} in, {accepted} accepted + {rejected} rejected")
    shards, reasons, texts = [], Counter(), Counter()
    for r in sorted(report.shards, key=lambda r: r.index):
        samples = Path(r.samples_path)
        tokens = samples.with_name(samples.name.replace("samples-", "tokens-"))
        table = pq.read_table(samples, columns=["split", "captions", "qa"])
        splits = Counter(table["split"].to_pylist())
        for column, name in (("captions", "captions"), ("qa", "questions")):
            texts[name] += pc.sum(pc.list_value_length(table[column])).as_py() or 0
        reasons.update(pq.read_table(r.rejects_path, columns=["reason"])["reason"].to_pylist())
        shards.append({
            "samples": samples.name, "tokens": tokens.name, "rejects": Path(r.rejects_path).name,
            "rows": r.accepted, "rejected": r.rejected, "splits": dict(sorted(splits.items())),
            "samples_sha256": file_sha256(samples), "tokens_sha256": file_sha256(tokens),
        })
    manifest = {
        "source": report.source,
        "records_in": report.records_in,
        "accepted": accepted,
        "rejected": rejected,
        "rejects_by_reason": dict(sorted(reasons.items())),
        "splits": dict(sorted(sum((Counter(s["splits"]) for s in shards), Counter()).items())),
        "texts": {"captions": texts["captions"], "questions": texts["questions"]},  # in accepted records
        "last_run": {"processed": report.processed, "kept": report.kept, "dropped": report.dropped,
                     "seconds": round(report.seconds, 3)},
        "shards": shards,
        "tokenizer": Path(tokenizer_path).name,
        "tokenizer_sha256": file_sha256(tokenizer_path),
        "digest": combined_digest([s["samples_sha256"] for s in shards] + [file_sha256(tokenizer_path)]),
        **extra,
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(processed_dir: str | Path) -> dict[str, Any]:
    path = Path(processed_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {processed_dir}: run the ingest stage first")
    return read_json(path)


@dataclass
class SampleSet:
    """Samples of some splits held in memory for training (fine for datasets that fit in RAM)."""

    sample_ids: list[str]
    splits: list[str]
    images: np.ndarray  # (N, 3, S, S) uint8
    captions: list[list[dict]]  # per sample: [{"lang", "text"}]
    caption_ids: list[list[list[int]]]  # per sample, per caption: token ids
    qa: list[list[dict]]  # per sample: [{"question", "answer", "type"}]
    question_ids: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.sample_ids)


def load_samples(processed_dir: str | Path, splits: tuple[str, ...] = ("train",),
                 with_images: bool = True) -> SampleSet:
    processed_dir = Path(processed_dir)
    manifest = read_manifest(processed_dir)
    cols = ["sample_id", "split", "captions", "qa"] + (["image"] if with_images else [])
    samples = read_tables([processed_dir / s["samples"] for s in manifest["shards"]], columns=cols)
    tokens = read_tables([processed_dir / s["tokens"] for s in manifest["shards"]])
    mask = pc.is_in(samples["split"], pa.array(list(splits)))
    samples, tokens = samples.filter(mask), tokens.filter(mask)  # token shards align row by row
    images = (np.stack([decode_png(b) for b in samples["image"].to_pylist()]) if with_images and len(samples)
              else np.zeros((0, 3, 1, 1), np.uint8))
    return SampleSet(
        sample_ids=samples["sample_id"].to_pylist(),
        splits=samples["split"].to_pylist(),
        images=images,
        captions=samples["captions"].to_pylist(),
        caption_ids=tokens["caption_ids"].to_pylist(),
        qa=samples["qa"].to_pylist(),
        question_ids=tokens["question_ids"].to_pylist(),
    )


def load_tokenizer(processed_dir: str | Path) -> TextTokenizer:
    return TextTokenizer.from_file(Path(processed_dir) / TOKENIZER)
