"""Package: a trained model's files (encoder, heads, tokenizer, the image index text search ranks) and
what inference needs to know, in one folder: what registration logs as the model's artifacts.

The bundle's meta carries the serving limits (`cfg.serving`, resolved against `cfg.ingest`), so a deployed
model enforces the limits it was registered with, wherever it is served."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcore.catalog import BundleDir, Catalog, ProcessedDir
from mmcore.config import PipelineConfig
from mmcore.features import image_index
from mmcore.io import combined_digest, file_sha256, is_uri, read_json, write_json
from mmcore.serving import Limits


@dataclass(frozen=True)
class Package:
    bundle: Path
    model_digest: str  # what identifies the model's behaviour: its files, the index it searches, its limits
    test_digest: str  # the test split it was scored on (the champion gate compares only equal ones)


def serving_limits(cfg: PipelineConfig) -> Limits:
    """What one request to the packaged model may hold: `cfg.serving`, unset limits taken from ingest's."""
    return Limits.from_config(cfg.serving, cfg.ingest)


def model_digest(cfg: PipelineConfig, cat: Catalog) -> str:
    """The digest of the checkpoints, the tokenizer and the image index a model of `cat` is made of, and of
    the serving limits it enforces (a change of limits is a new model version)."""
    limits = json.dumps(serving_limits(cfg).as_meta(), sort_keys=True)
    return combined_digest([cat.pretrain.digest(), cat.heads.digest(), file_sha256(cat.processed.tokenizer),
                            cat.features.digest(), hashlib.sha256(limits.encode()).hexdigest()])


def run(cfg: PipelineConfig, cat: Catalog, out: Path, metrics: dict[str, float]) -> Package:
    """Write the bundle of the model `cat` names into `out`, with its test metrics."""
    raw = cat.raw_uri if is_uri(cat.raw_uri) else str(Path(cat.raw_uri).resolve())
    meta: dict[str, Any] = {
        "dataset": cfg.dataset, "image_size": cfg.ingest.image_size, "resize": cfg.ingest.resize,
        "max_text_len": cfg.encoder.max_text_len,
        "max_caption_len": cfg.heads.max_caption_len, "raw_root": raw,  # where search results' image paths start
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "serving": serving_limits(cfg).as_meta()}  # mmcore/serving.py enforces them on every request
    bundle = write_bundle(BundleDir(out), cat.pretrain.encoder, cat.heads.heads, cat.processed.tokenizer,
                          image_index(cat.features, cat.processed), meta)
    return Package(bundle.path, model_digest(cfg, cat), split_digest(cat.processed, "test"))


def write_bundle(bundle: BundleDir, encoder: Path, heads: Path, tokenizer: Path, index: pa.Table,
                 meta: dict[str, Any]) -> BundleDir:
    """Copies everything inference needs into one folder (the registered model's artifacts).

    `index` has sample_id, image_path and image_embedding columns: the images `search` ranks.
    `meta` must give image_size, max_text_len and max_caption_len; `serving` (`Limits.as_meta()`) gives the
    limits requests are held to (without it, the default config's).
    """
    bundle.path.mkdir(parents=True, exist_ok=True)
    for src, dest in ((encoder, bundle.encoder), (heads, bundle.heads), (tokenizer, bundle.tokenizer)):
        shutil.copyfile(src, dest)
    pq.write_table(index, bundle.index)
    write_json(bundle.meta, meta)
    return bundle


def split_digest(processed: ProcessedDir, split: str = "test") -> str:
    """Content digest of one split: its sample ids, the images the model sees, captions and QA, in order.

    Two models whose digests match were scored on the same examples with the same labels.
    """
    digest = hashlib.sha256(split.encode())
    for shard in processed.listed("samples"):
        table = pq.read_table(shard, columns=["sample_id", "split", "image", "captions", "qa"])
        for row in table.filter(pc.equal(table["split"], split)).to_pylist():
            digest.update(row["sample_id"].encode() + b"\0" + hashlib.sha256(row["image"]).digest())
            digest.update(repr((row["captions"], row["qa"])).encode())
    return digest.hexdigest()


def extend_index(src: BundleDir, dest: BundleDir, embedded: pa.Table, root: str) -> int:
    """A copy of bundle `src` in `dest` whose search index also ranks the answered rows of `embedded` (batch
    inference's embed output: id, embedding, image_path, status), without retraining anything.

    Their image paths are made absolute under `root` (the input's folder or URI), so a search result names a
    file wherever the model is served; an id already in the index is replaced by the new embedding.
    Returns the number of images added or replaced.
    """
    new = embedded.filter(pc.equal(embedded["status"], "ok"))
    index = pq.read_table(src.index)
    if new.num_rows and new.schema.field("embedding").type != index.schema.field("image_embedding").type:
        raise ValueError(f"the embeddings are {new.schema.field('embedding').type}; the index holds "
                         f"{index.schema.field('image_embedding').type}: embed with the same model")
    base = root.rstrip("/") if is_uri(root) else str(Path(root).resolve())
    paths = [p if is_uri(p) or Path(p).is_absolute() else f"{base}/{p}" for p in new["image_path"].to_pylist()]
    added = pa.table({"sample_id": new["id"], "image_path": pa.array(paths, pa.string()),
                      "image_embedding": new["embedding"]})
    kept = index.filter(pc.invert(pc.is_in(index["sample_id"], value_set=added["sample_id"])))
    meta = read_json(src.meta)
    meta["index_rows"] = kept.num_rows + added.num_rows
    write_bundle(dest, src.encoder, src.heads, src.tokenizer, pa.concat_tables([kept, added.cast(kept.schema)]), meta)
    return added.num_rows
