"""Batch inference: a folder, a Parquet table or an object-store prefix of inputs -> one Parquet row per input,
an answer or a rejection with its reason.

    requests = read_requests("data/inbox", "caption")             # the ingest source readers, images alone
    report = predict(predictor, requests, "caption", Path("out.parquet"), ModelRef("mmcore-shapes", "3", digest))

Inputs are read by the same source readers as ingest (mmcore/data/sources), so every format ingest takes works
here, and a record ingest would reject for its image or file is a rejected row here, with the same reason codes.
Text is not required: a folder of images with no captions is a `folder` source. `search` reads queries
instead: a `.txt` file (one per line), a Parquet table with a `text` column, or the captions of any source.

Work is cut into shards of `shard_rows` inputs. Each shard's rows are written under a name that is the digest
of what decides them (the task, the model digest, the params, and each input's id, record and image bytes) in
the parts folder beside the output, by a temporary name and a rename. A killed run, run again, reuses every
shard it finished; a drop folder scored again recomputes only the shards whose inputs changed. The output file
is assembled from the parts last, by a temporary name and a rename, and parts no longer named are removed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmcore.batch.inputs import IMAGE_TASKS, NO_QUESTION, TASKS, Request, Requests, check_task, read_requests
from mmcore.data import records as R
from mmcore.data.images import cut_short
from mmcore.data.ingest.decode import read_image
from mmcore.data.shards import vector_type
from mmcore.inference import PixelBomb, Predictor, image_size
from mmcore.io import folder_lock
from mmcore.serving import Limits

SHARD_ROWS = 256
BATCH = 32  # images per forward pass
OK, REJECTED = "ok", "rejected"
__all__ = ["NO_QUESTION", "SHARD_ROWS", "TASKS", "ModelRef", "PredictReport", "Request", "Requests", "check_options",
           "check_task",
           "output_schema", "parts_folder", "predict", "read_requests"]


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: its registered name and version (empty for a model outside the registry) and its
    digest, which every output row carries."""

    name: str
    version: str
    digest: str


@dataclass
class PredictReport:
    out: Path
    rows_in: int = 0
    answered: int = 0
    rejected: int = 0
    shards: int = 0
    shards_reused: int = 0
    seconds: float = 0.0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {"rows_in": self.rows_in, "rows_answered": self.answered, "rows_rejected": self.rejected,
                "shards": self.shards, "shards_reused": self.shards_reused,
                "rows_per_s": self.rows_in / max(self.seconds, 1e-9)}


def output_schema(task: str, embed_dim: int = 0) -> pa.Schema:
    """The output table: id, task, answer, score, model version and digest, then what the task adds
    (question, matches, embedding) and where each row came from, or why it was rejected."""
    fields = [pa.field("id", pa.string()), pa.field("task", pa.string()), pa.field("answer", pa.string()),
              pa.field("score", pa.float64()), pa.field("model_version", pa.string()),
              pa.field("model_digest", pa.string())]
    if task == "ask":
        fields.append(pa.field("question", pa.string()))
    if task == "search":
        fields += [pa.field("text", pa.string()), pa.field("matches", pa.string())]
    if task == "embed":
        fields.append(pa.field("embedding", vector_type(embed_dim)))
    fields += [pa.field("image_path", pa.string()), pa.field("where", pa.string()), pa.field("status", pa.string()),
               pa.field("reason", pa.string()), pa.field("message", pa.string())]
    return pa.schema(fields)


def predict(predictor: Predictor, requests: Requests, task: str, out: Path, model: ModelRef, k: int = 5,
            shard_rows: int = SHARD_ROWS, log: Any = print) -> PredictReport:
    """Answers every request of `requests` with `predictor` and writes one row per request to `out` (Parquet).

    Shards already written by an earlier (killed) run with the same inputs, model and params are reused. Two
    runs writing the same `out` wait for each other (a lock on the parts folder).
    """
    out = check_options(task, out, k, shard_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = parts_folder(out)
    parts.mkdir(exist_ok=True)
    started = time.monotonic()
    report = PredictReport(out)
    schema = output_schema(task, predictor.index_emb.shape[1])
    params = {"task": task, "model": model.digest, "k": k if task == "search" else None, "schema": str(schema)}
    with folder_lock(parts):
        names: list[str] = []
        for shard in _chunks(requests.items, shard_rows):
            loaded = [_load(requests.root, r) if task in IMAGE_TASKS and r.problem is None else None for r in shard]
            name = _shard_name(params, shard, loaded)
            table = _reuse(parts / name, len(shard), schema)
            reused = table is not None
            if table is None:
                table = _run_shard(predictor, task, shard, loaded, model, k, schema)
                _write(parts / name, table)
            names.append(name)
            report.shards_reused += reused
            _count(report, table)
            log(f"shard {report.shards}: {len(shard)} inputs{' (done by an earlier run)' if reused else ''}; "
                f"{report.rows_in} so far, {report.rejected} rejected")
        _assemble(out, [parts / n for n in names], schema)
        for stale in parts.glob("*.parquet"):
            if stale.name not in names:
                stale.unlink(missing_ok=True)
    report.seconds = time.monotonic() - started
    return report


def check_options(task: str, out: str | Path, k: int = 5, shard_rows: int = SHARD_ROWS) -> Path:
    """The output path, once the task, the output's name, k and shard_rows are valid (else a one-line
    ValueError naming the bad value and what is allowed)."""
    check_task(task)
    out = Path(out)
    if out.suffix.lower() != ".parquet" or out.is_dir():
        raise ValueError(f"--out {out} must name a Parquet file (ending in .parquet)")
    if k < 1 or shard_rows < 1:
        raise ValueError(f"-k and --shard-rows must be integers >= 1; got {k} and {shard_rows}")
    return out


def parts_folder(out: Path) -> Path:
    """Where the shards of `out` are kept between runs: a hidden folder beside it."""
    return out.parent / f".{out.name}.parts"


def _chunks(items: Iterable[Request], size: int) -> Iterator[list[Request]]:
    chunk: list[Request] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load(root: str, request: Request) -> bytes | R.Problem:
    """The request's image file: its inline bytes, or the file under the source's root (or the problem)."""
    if request.image_bytes is not None:
        return request.image_bytes
    if not request.image_path:
        return R.Problem(R.MISSING_FILE, f"{request.where} names no image")
    return read_image(root, request.image_path)


def _shard_name(params: dict[str, Any], shard: list[Request], loaded: list[bytes | R.Problem | None]) -> str:
    """The digest of everything that decides a shard's rows: the part's file name."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for request, data in zip(shard, loaded, strict=True):
        image = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else repr(data)
        problem = [request.problem.reason, request.problem.message] if request.problem else None
        digest.update(json.dumps([request.id, request.where, request.record_digest, request.question, request.text,
                                  problem, image]).encode("utf-8", "backslashreplace"))
    return digest.hexdigest()[:40] + ".parquet"


def _reuse(path: Path, rows: int, schema: pa.Schema) -> pa.Table | None:
    """The part an earlier run wrote, if it is whole: readable, with this schema and one row per input."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    return table if table.num_rows == rows and table.schema.equals(schema) else None


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _count(report: PredictReport, table: pa.Table) -> None:
    report.shards += 1
    report.rows_in += table.num_rows
    for reason in table["reason"].to_pylist():
        if reason is None:
            report.answered += 1
        else:
            report.rejected += 1
            report.rejects_by_reason[reason] = report.rejects_by_reason.get(reason, 0) + 1


def _assemble(out: Path, parts: list[Path], schema: pa.Schema) -> None:
    """The output file from its parts in order, streamed, by a temporary name and a rename."""
    tmp = out.with_name(f".{out.name}.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part))
    tmp.replace(out)


def _pixels(predictor: Predictor, limits: Limits, data: bytes) -> np.ndarray | R.Problem:
    """The image as the model sees it, or why it cannot be used (the ingest reason codes)."""
    if len(data) > limits.max_image_bytes:
        return R.Problem(R.TOO_LARGE, f"the image is {len(data)} bytes; the model takes at most "
                                      f"{limits.max_image_bytes}")
    try:
        width, height = image_size(data)
    except PixelBomb as exc:
        return R.Problem(R.TOO_LARGE, f"the image {exc}")
    except ValueError as exc:
        return R.Problem(R.TRUNCATED if cut_short(data) else R.UNDECODABLE, f"the image {exc}")
    if width * height > limits.max_image_pixels:
        return R.Problem(R.TOO_LARGE, f"the image is {width} x {height} = {width * height} pixels; the model takes "
                                      f"at most {limits.max_image_pixels}")
    try:
        return predictor.pixels(data)
    except ValueError as exc:
        return R.Problem(R.TRUNCATED if cut_short(data) else R.UNDECODABLE, f"the image {exc}")


def _run_shard(predictor: Predictor, task: str, shard: list[Request], loaded: list[bytes | R.Problem | None],
               model: ModelRef, k: int, schema: pa.Schema) -> pa.Table:
    """One row per request of the shard, in order."""
    limits = Limits.from_meta(predictor.meta)
    rows: list[dict[str, Any]] = []
    ready: list[tuple[int, Any]] = []  # (row, pixels or query text)
    for request, data in zip(shard, loaded, strict=True):
        problem = request.problem
        if problem is None and isinstance(data, R.Problem):
            problem = data
        if problem is None and task == "ask" and len(request.question or "") > limits.max_text_chars:
            problem = R.Problem(R.TEXT_TOO_LONG, f"the question has {len(request.question)} characters; the model "
                                                 f"takes at most {limits.max_text_chars}")
        if problem is None and task == "search" and len(request.text or "") > limits.max_text_chars:
            problem = R.Problem(R.TEXT_TOO_LONG, f"the text has {len(request.text)} characters; the model takes at "
                                                 f"most {limits.max_text_chars}")
        pixels = _pixels(predictor, limits, data) if problem is None and isinstance(data, bytes) else None
        if isinstance(pixels, R.Problem):
            problem = pixels
        row = {"id": request.id, "task": task, "answer": None, "score": None, "model_version": model.version,
               "model_digest": model.digest, "question": request.question, "text": request.text, "matches": None,
               "embedding": None, "image_path": request.image_path, "where": request.where,
               "status": REJECTED if problem else OK, "reason": problem.reason if problem else None,
               "message": problem.message if problem else None}
        rows.append(row)
        if problem is None:
            ready.append((len(rows) - 1, pixels if task in IMAGE_TASKS else request.text))
    for start in range(0, len(ready), BATCH):
        batch = ready[start:start + BATCH]
        where = [i for i, _ in batch]
        if task == "search":
            for i, found in zip(where, predictor.search([t for _, t in batch], k), strict=True):
                rows[i].update(answer=found[0].image_path if found else None, score=found[0].score if found else None,
                               matches=json.dumps([vars(m) for m in found]))
            continue
        pixels = torch.from_numpy(np.stack([p for _, p in batch]))
        if task == "caption":
            for i, text in zip(where, predictor.caption_pixels(pixels), strict=True):
                rows[i]["answer"] = text
        elif task == "ask":
            answers = predictor.answer_pixels(pixels, [rows[i]["question"] for i in where])
            for i, (answer, p) in zip(where, answers, strict=True):
                rows[i].update(answer=answer, score=p)
        else:
            for i, vector in zip(where, predictor.embed_pixels(pixels), strict=True):
                rows[i]["embedding"] = vector
    return _table(rows, schema)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {}
    for f in schema:
        values = [r[f.name] for r in rows]
        if f.name == "embedding":  # little-endian float32 bytes (mmcore.data.shards.vector_type)
            values = [None if v is None else np.ascontiguousarray(v, "<f4").tobytes() for v in values]
        columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=schema)
