"""Frozen-encoder feature extraction into Parquet shards, and loading them back for the heads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mmcore import integrity
from mmcore.catalog import FeaturesDir, ProcessedDir
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
from mmcore.io import combined_digest, file_sha256, write_json
from mmcore.models.contrastive import DualEncoder

Clock = Callable[[str, float], None]  # (piece of the work, seconds it took): a benchmark's breakdown


class _Laps:
    """Calls `clock(name, seconds since the last lap)`; does nothing without a clock."""

    def __init__(self, clock: Clock | None):
        self.clock, self.last = clock, time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.clock is not None:
            now = time.perf_counter()
            self.clock(name, now - self.last)
            self.last = now


@torch.no_grad()
def extract_shard(model: DualEncoder, samples_path: str | Path, tokens_path: str | Path, out_path: str | Path,
                  encoder_sha256: str, device: torch.device, batch_size: int = 256,
                  clock: Clock | None = None, fresh: bool = False,
                  warn: integrity.Warn = integrity.warn) -> dict[str, Any]:
    """Writes the feature shard of one sample shard, row-aligned with it.

    An existing shard is kept if it reads and was written from the same inputs (`kept_rows`); a corrupt one
    is written again, and `warn` says so. `fresh` writes it again without reading it. `clock` gets the
    seconds each piece took: hash_input, read_parquet, decode_png, image_forward, convert_outputs (building
    the output table included), pad_captions, text_forward, write_parquet.
    """
    out_path, lap = Path(out_path), _Laps(clock)
    spec = {"samples": file_sha256(samples_path), "encoder": encoder_sha256}
    if not fresh and out_path.exists() and (rows := kept_rows(out_path, spec, samples_path, warn)) is not None:
        return {"path": out_path.name, "rows": rows, "skipped": True}
    lap("hash_input")
    model.eval()
    samples = pq.read_table(samples_path, columns=["sample_id", "split", "image", "captions"])
    tokens = pq.read_table(tokens_path, columns=["caption_ids"])
    blobs = samples["image"].to_pylist()
    lap("read_parquet")
    images = _decode_images(blobs, torch.get_num_threads())  # (N, 3, S, S) uint8
    lap("decode_png")
    emb, pooled, grid = [], [], []
    for i in range(0, len(images), batch_size):
        out = model.encode_image(images[i : i + batch_size].to(device))
        lap("image_forward")
        emb.append(out.embedding.cpu())
        pooled.append(out.pooled.cpu())
        grid.append(out.grid.flatten(1).cpu())  # (B, C*g*g)
        lap("convert_outputs")
    order, batches, counts = caption_batches(tokens["caption_ids"], model.text_encoder.pad_id, batch_size)
    lap("pad_captions")
    txt_all = np.zeros((len(order), model.text_proj.out_features), np.float32)  # (C, D), shard order
    if batches:
        sorted_txt = torch.cat([model.encode_text(b.to(device)).cpu() for b in batches]).numpy()
        lap("text_forward")
        txt_all[order] = sorted_txt
    table = _features_table(model, samples, emb, pooled, grid, vector_lists(txt_all, counts))
    lap("convert_outputs")
    write_table(out_path, table, {"spec": spec, "cells": model.image_encoder.grid**2})
    lap("write_parquet")
    return {"path": out_path.name, "rows": len(images), "skipped": False}


def kept_rows(path: Path, spec: dict[str, str], samples_path: str | Path, warn: integrity.Warn) -> int | None:
    """The rows of an existing feature shard that can stay: it reads, was written from `spec` (the same
    samples and encoder) and has a row per sample. None when it must be written again; `warn` says why when
    the shard is corrupt (another spec is an ordinary change and passes silently)."""
    why = integrity.parquet_problem(path)
    if why is None:
        if read_metadata(path).get("spec") != spec:
            return None
        rows, samples = pq.read_metadata(path).num_rows, pq.read_metadata(samples_path).num_rows
        if rows == samples:
            return rows
        why = f"{rows} rows for the {samples} samples of {Path(samples_path).name}"
    warn(f"{path} is corrupt ({why}): extracting it again")
    return None


def _features_table(model: DualEncoder, samples: pa.Table, emb: list[torch.Tensor], pooled: list[torch.Tensor],
                    grid: list[torch.Tensor], text_rows: pa.Array) -> pa.Table:
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
    return pa.table(columns, schema=schema)


def _decode_png(blob: bytes) -> torch.Tensor:
    """PNG bytes -> (3, H, W) uint8: libpng through torchvision, Pillow for anything but 8-bit RGB.

    Sample shards hold 8-bit RGB PNGs (lossless), which both decode to the same pixels; libpng is ~1.6x
    faster than Pillow here and releases the GIL, so several threads decode in parallel.
    """
    from torchvision.io import decode_png as decode_png_tv  # imported on use: importing torchvision is slow

    img = decode_png_tv(torch.frombuffer(bytearray(blob), dtype=torch.uint8))  # bytearray: writable, no warning
    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        return torch.from_numpy(decode_png(blob))
    return img


def _decode_images(blobs: list[bytes], workers: int) -> torch.Tensor:
    """The PNGs of a whole shard -> (N, 3, S, S) uint8, decoded on `workers` threads.

    Decoding happens before the forward passes, when the cores torch uses would otherwise idle; decoding
    on a thread during the forward instead only slows the forward, which already keeps them busy.
    """
    if not blobs:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    step = -(-len(blobs) // max(1, workers))
    chunks = [blobs[i : i + step] for i in range(0, len(blobs), step)]
    if len(chunks) == 1:
        return torch.stack([_decode_png(b) for b in blobs])
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(lambda chunk: [_decode_png(b) for b in chunk], chunks))
    return torch.stack([img for part in parts for img in part])


def caption_batches(caption_ids: pa.ChunkedArray, pad_id: int,
                    batch_size: int) -> tuple[np.ndarray, list[torch.Tensor], list[int]]:
    """The captions of a tokens shard in the batches the text encoder gets: sorted by length, each padded
    to its own longest caption. Returns (order, batches, counts): row j of torch.cat(batches) is caption
    order[j]; counts holds the number of captions of each sample."""
    ids, lengths, counts = _caption_matrix(caption_ids, pad_id)
    order, batches = _length_sorted_batches(ids, lengths, batch_size)
    return order, batches, counts


def _caption_matrix(caption_ids: pa.ChunkedArray, pad_id: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every caption of a tokens shard as one right-padded id matrix, without Python lists per caption.

    Returns (ids, lengths, counts): ids (C, T) int64 in shard order, padded with `pad_id` to the longest
    caption; lengths (C,) of the captions; counts, the number of captions of each of the N samples.
    """
    per_sample = caption_ids.combine_chunks()  # list<list<int>>
    per_caption = per_sample.flatten()  # list<int>, one entry per caption
    lengths = pc.list_value_length(per_caption).to_numpy().astype(np.int64)  # (C,)
    width = max(1, int(lengths.max(initial=0)))
    ids = np.full((len(lengths), width), pad_id, np.int64)  # (C, T)
    ids[np.arange(width) < lengths[:, None]] = per_caption.flatten().to_numpy()  # row-major = caption order
    return ids, lengths, pc.list_value_length(per_sample).to_numpy().tolist()


def _length_sorted_batches(ids: np.ndarray, lengths: np.ndarray,
                           batch_size: int) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Captions sorted by length and cut into batches, each padded only to its own longest caption.

    Returns (order, batches): row j of torch.cat(batches) is caption order[j]. The text encoders ignore
    padding (the RNNs pack, the transformer masks it and trims padded columns), so a caption's embedding
    is the same in any batch up to float rounding. In shard order nearly every batch of 256 holds a caption
    of the maximum length, so an RNN runs that many steps per batch; sorted, most batches run far fewer
    (with more rows per step), and a transformer attends over less padding.
    """
    order = np.argsort(lengths, kind="stable")  # (C,)
    batches = []
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        width = max(1, int(lengths[rows].max()))
        batches.append(torch.from_numpy(ids[rows, :width]))  # (B, T_b) long; fancy indexing copies
    return order, batches


def write_manifest(features: FeaturesDir, shards: list[dict[str, Any]], encoder: Path,
                   processed: ProcessedDir) -> dict[str, Any]:
    """Writes the features manifest (last: it marks the folder complete); `shards` as extract_shard returned them."""
    digests = [file_sha256(features.path / s["path"]) for s in shards]
    manifest = {
        "shards": [{"path": s["path"], "rows": s["rows"], "sha256": d} for s, d in zip(shards, digests, strict=True)],
        "rows": sum(s["rows"] for s in shards),
        "encoder": str(encoder),
        "encoder_sha256": file_sha256(encoder),
        "processed": str(processed),
        "processed_digest": processed.digest(),
        "digest": combined_digest(digests),
    }
    write_json(features.manifest, manifest)
    return manifest


class DiskRows:
    """A float32 array kept in a file, rows read on demand: `rows[idx]` is `array[idx]` for a sequence of row
    numbers. The heads train on these when their features spill to disk: each batch reads its own rows
    (through the page cache, which the system evicts as it needs), so the process holds a batch, not a split.
    Runs of consecutive rows are read at once; plain reads, not a memory map, whose pages would count
    against the process."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = Path(path), shape
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of {self.shape[0]} in {self.path}")
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            k = 0
            while k < len(rows):
                run = 1
                while k + run < len(rows) and rows[k + run] == rows[k] + run:
                    run += 1
                f.seek(int(rows[k]) * self.row_bytes)
                if f.readinto(buf[k * self.row_bytes : (k + run) * self.row_bytes]) != run * self.row_bytes:
                    raise integrity.CorruptOutput(self.path, "shorter than its rows", "train")
                k += run
        return out


class _Spill:
    """Appends the image vectors of each shard to three files in `folder`: what `DiskRows` then reads."""

    NAMES = ("image_embedding", "image_pooled", "image_grid")

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {name: open(folder / f"{name}.f32", "wb") for name in self.NAMES}  # noqa: SIM115
        self.widths: dict[str, int] = {}
        self.rows = 0

    def add(self, feats: pa.Table) -> pa.Table:
        """Writes the table's image vectors; returns it without them."""
        for name, f in self.files.items():
            matrix = vectors_to_numpy(feats[name])
            self.widths[name] = matrix.shape[1]
            f.write(np.ascontiguousarray(matrix).tobytes())
        self.rows += feats.num_rows
        return feats.drop_columns(list(self.NAMES))

    def close(self, cells: int) -> tuple[DiskRows, DiskRows, DiskRows]:
        for f in self.files.values():
            f.close()
        emb, pooled, grid = (DiskRows(Path(self.files[n].name), (self.rows, self.widths.get(n, 1))) for n in self.NAMES)
        return emb, pooled, DiskRows(grid.path, (self.rows, grid.shape[1] // cells, cells))


Vectors = np.ndarray | DiskRows  # rows indexed by lists of sample numbers either way


@dataclass
class FeatureSet:
    """Frozen features of some splits plus the texts and tokens the heads learn from."""

    sample_ids: list[str]
    image_embedding: Vectors  # (N, D)
    pooled: Vectors  # (N, C)
    grid: Vectors  # (N, C, g*g)
    text_embeddings: list[np.ndarray]  # per sample (captions, D)
    captions: list[list[dict]]
    caption_ids: list[list[list[int]]]
    qa: list[list[dict]]  # per sample, the SAMPLES qa structs: question, answer, type, answers, answer_type, ...
    question_ids: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.sample_ids)


def read_features(paths: list[Path], columns: list[str] | None = None) -> pa.Table:
    """Feature shards as one table; one that does not read is an error naming it and the extract stage
    (`FeaturesDir.verify` checks them all against their manifest first, where a stage reads them)."""
    tables = []
    for path in paths:
        try:
            # memory-mapped: the vector columns are decoded straight from the page cache, not buffered first
            # (1.6x np.load of the same matrix instead of 0.42x, half the peak memory; BENCHMARKS.md)
            tables.append(pq.read_table(path, columns=columns, memory_map=True))
        except pa.ArrowException as exc:  # ArrowInvalid: no footer (truncated), bad pages
            raise integrity.CorruptOutput(path, integrity.reason(exc), "extract") from None
    return pa.concat_tables(tables) if tables else pa.table({})


def load_features(features: FeaturesDir, processed: ProcessedDir, splits: tuple[str, ...], spill: Path | None = None,
                  images: bool = True, text_embeddings: bool = True) -> FeatureSet:
    """The features of `splits`, with the captions, questions and token ids of the same samples.

    With `spill`, a folder, the image vectors are written there and read back row by row (`DiskRows`): memory
    then holds the texts, not the vectors. `images=False` leaves the image vectors out (zero rows), and
    `text_embeddings=False` the caption embeddings (empty per sample): for callers that need the texts only.
    """
    shards, wanted = features.listed(), pa.array(list(splits))
    sample_shards, token_shards = processed.listed("samples"), processed.listed("tokens")
    mismatch = RuntimeError(f"feature shards in {features} do not match the samples in {processed}; re-run the "
                            "extract stage")
    if len(shards) != len(sample_shards):
        raise mismatch
    columns = ["sample_id", "split", *(_Spill.NAMES if images else ()),
               *(["text_embeddings"] if text_embeddings else ())]
    to_disk = _Spill(spill) if spill is not None and images else None
    parts = []
    for feat_path, sample_path, token_path in zip(shards, sample_shards, token_shards, strict=True):
        # shard by shard, so only the rows of `splits` are ever held (the grid features of a big dataset are large)
        feats = read_features([feat_path], columns)
        samples = read_tables([sample_path], columns=["sample_id", "captions", "qa"])
        if feats["sample_id"].to_pylist() != samples["sample_id"].to_pylist():
            raise mismatch
        mask = pc.is_in(feats["split"], wanted)
        tokens = read_tables([token_path], columns=["caption_ids", "question_ids"])
        feats = feats.filter(mask)
        parts.append((to_disk.add(feats) if to_disk else feats, samples.filter(mask), tokens.filter(mask)))
    feats, samples, tokens = (pa.concat_tables([p[i] for p in parts]) if parts else pa.table({}) for i in range(3))
    cells = int(read_metadata(shards[0])["cells"]) if shards else 1
    n = feats.num_rows
    if to_disk:
        emb, pooled, grid = to_disk.close(cells)
    elif images:
        emb, pooled = vectors_to_numpy(feats["image_embedding"]), vectors_to_numpy(feats["image_pooled"])
        grid = vectors_to_numpy(feats["image_grid"])
        grid = grid.reshape(len(grid), -1, cells)  # (N, G, cells)
    else:
        emb, pooled, grid = (np.zeros(shape, np.float32) for shape in ((0, 1), (0, 1), (0, 1, cells)))
    return FeatureSet(
        sample_ids=feats["sample_id"].to_pylist() if n else [],
        image_embedding=emb, pooled=pooled, grid=grid,
        text_embeddings=(vector_lists_to_numpy(feats["text_embeddings"]) if text_embeddings
                         else [np.zeros((0, 1), np.float32)] * n),
        captions=samples["captions"].to_pylist() if n else [],
        caption_ids=tokens["caption_ids"].to_pylist() if n else [],
        qa=samples["qa"].to_pylist() if n else [],
        question_ids=tokens["question_ids"].to_pylist() if n else [],
    )


def image_index(features: FeaturesDir, processed: ProcessedDir) -> pa.Table:
    """sample_id, image_path, image_embedding of every extracted image: what text search ranks."""
    feats = read_features(features.listed(), ["sample_id", "image_embedding"])
    paths = read_tables(processed.listed("samples"), ["image_path"])
    return feats.append_column("image_path", paths["image_path"]).select(["sample_id", "image_path", "image_embedding"])
