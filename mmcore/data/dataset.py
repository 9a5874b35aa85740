"""An ingested dataset, read back: its manifest, its tokenizer and the samples of some splits, in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcore.catalog import ProcessedDir
from mmcore.data.shards import decode_png, read_tables
from mmcore.io import read_json
from mmcore.text.tokenizer import TextTokenizer


def read_manifest(processed: ProcessedDir) -> dict[str, Any]:
    """The manifest of an ingested dataset; FileNotFoundError when it was not (completely) ingested."""
    if not processed.manifest.is_file():
        raise FileNotFoundError(f"no {processed.manifest.name} in {processed.path}: run the ingest stage first")
    return read_json(processed.manifest)


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


def load_samples(processed: ProcessedDir, splits: tuple[str, ...] = ("train",), with_images: bool = True) -> SampleSet:
    """The samples of `splits` in the shards the manifest lists, with their token ids."""
    read_manifest(processed)  # a clear error when the dataset was not ingested
    cols = ["sample_id", "split", "captions", "qa"] + (["image"] if with_images else [])
    kept_samples, kept_tokens = [], []
    for samples_path, tokens_path in zip(processed.listed("samples"), processed.listed("tokens"), strict=True):
        # shard by shard: only the rows of `splits` are ever held, never the whole dataset (the val split of a
        # streamed training run is a small part of it)
        part = read_tables([samples_path], columns=cols)
        mask = pc.is_in(part["split"], pa.array(list(splits)))
        kept_samples.append(part.filter(mask))
        kept_tokens.append(read_tables([tokens_path]).filter(mask))  # token shards align row by row
    samples = pa.concat_tables(kept_samples) if kept_samples else read_tables([], columns=cols)
    tokens = pa.concat_tables(kept_tokens) if kept_tokens else read_tables([])
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


def load_tokenizer(processed: ProcessedDir) -> TextTokenizer:
    return TextTokenizer.from_file(processed.tokenizer)
