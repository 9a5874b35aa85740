"""One record -> an accepted row (checked, decoded, resized image) or a rejected row with its reason, and the
process pool that decodes a shard's records in parallel, in source order."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import lru_cache

from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.images import load_image
from mmcore.data.storage import BadPath, OutsideRoot, Storage, Unreadable

SPLITS = ("train", "val", "test")
BATCH = 16  # records per process-pool task: amortises pickling without hurting load balance
ENV_PREFIXES = ("AWS_",)  # object-store settings the workers' Storage reads from the environment


def assign_split(sha256: str, shares: tuple[float, float, float], given: str | None = None) -> str:
    """Deterministic split from a content digest: the same image always lands in the same split.

    A split given by the source is kept, except that its "train" is cut into train and val in the
    configured proportion (sources rarely ship a validation split).
    """
    u = int(sha256[:15], 16) / 16**15  # uniform in [0, 1)
    if given in ("val", "test"):
        return given
    if given == "train":
        train_share = shares[0] / max(shares[0] + shares[1], 1e-12)
        return "train" if u < train_share else "val"
    if u < shares[0]:
        return "train"
    return "val" if u < shares[0] + shares[1] else "test"


def key64(text: str) -> int:
    """A 64-bit fingerprint: the ledger keeps these instead of strings to stay small."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=8)
def _storage(uri: str) -> Storage:
    return Storage(uri)


def _reject(rec: R.SourceRecord, record_key: str, digest: str, problem: R.Problem) -> dict:
    return {"record": rec.number, "sample_id": rec.key, "record_key": record_key, "record_digest": digest,
            "where": rec.where, "image_path": rec.image, "reason": problem.reason, "message": problem.message,
            "duplicate_of": None}


def as_duplicate(row: dict, kept: str) -> dict:
    """An accepted row (with its "where") turned into the rejection of a duplicate of sample `kept`."""
    return {"record": row["record"], "sample_id": row["sample_id"], "record_key": row["record_key"],
            "record_digest": row["record_digest"], "where": row["where"], "image_path": row["image_path"],
            "reason": R.DUPLICATE, "message": f"same image bytes as sample {kept!r}, which was kept",
            "duplicate_of": kept}


class RecordError(RuntimeError):
    """A record could not be processed for a reason outside it (e.g. the object store did not answer): the run
    stops (a task retries it) with the record named, instead of rejecting a record that may be good."""


def process_record(uri: str, cfg: IngestConfig, rec: R.SourceRecord, record_key: str,
                   problem: R.Problem | None = None) -> dict:
    """One record -> an accepted row (has "image") or a rejection row (has "reason").

    Everything about the record itself (its text, path, file and image bytes) gives a rejection; anything else
    raises RecordError naming the record."""
    try:
        return _process(uri, cfg, rec, record_key, problem)
    except Exception as exc:
        raise RecordError(f"{rec.where} (image {R.shown(rec.image or '')}): {type(exc).__name__}: {exc}") from exc


def _process(uri: str, cfg: IngestConfig, rec: R.SourceRecord, record_key: str, problem: R.Problem | None) -> dict:
    digest = rec.digest()
    problem = problem or rec.problem
    if problem is None:
        problem = R.check_text(rec.annotation, cfg.max_text_chars)
    if problem is not None:
        return _reject(rec, record_key, digest, problem)
    ann = rec.annotation
    data = rec.image_bytes
    if data is None:
        data = read_image(uri, ann.image)
        if isinstance(data, R.Problem):
            return _reject(rec, record_key, digest, data)
    loaded = load_image(data, cfg)
    if isinstance(loaded, R.Problem):
        return _reject(rec, record_key, digest, loaded)
    png, width, height = loaded
    sha = hashlib.sha256(data).hexdigest()
    return {
        "sample_id": rec.key,
        "record": rec.number,
        "record_key": record_key,
        "record_digest": digest,
        "where": rec.where,  # not stored with accepted rows; needed if it turns out to be a duplicate
        "image_path": ann.image,
        "image_sha256": sha,
        "split": assign_split(sha, cfg.split, rec.split),
        "width": width,
        "height": height,
        "image": png,
        "captions": [{"lang": lang, "text": t.strip()} for lang, caps in ann.captions.items() for t in caps],
        "qa": [{"question": q.question.strip(), "answer": q.answer.strip().lower(), "type": q.type,
                "answers": [a.strip().lower() for a in q.answers], "answer_type": q.answer_type,
                "question_type": q.question_type, "question_id": q.question_id} for q in ann.qa],
    }


def read_image(uri: str, image: str) -> bytes | R.Problem:
    """The bytes of image file `image` under the storage root `uri`, or the problem with its path or file
    (Storage.read_bytes): what ingest and batch inference reject a record for."""
    try:
        return _storage(uri).read_bytes(image)
    except OutsideRoot as exc:
        return R.Problem(R.OUTSIDE_ROOT, str(exc))
    except BadPath as exc:
        return R.Problem(R.BAD_PATH, str(exc))
    except FileNotFoundError as exc:  # also a folder where a file should be
        return R.Problem(R.MISSING_FILE, str(exc))
    except Unreadable as exc:
        return R.Problem(R.UNREADABLE, exc.strerror or str(exc))


def _process_batch(uri: str, cfg: IngestConfig, items: list[tuple]) -> list[dict]:
    return [process_record(uri, cfg, *item) for item in items]


def _worker_env(env: dict[str, str]) -> None:
    """Pool initializer: the parent's object-store settings as of now (the forkserver's may be stale)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIXES)]:
        del os.environ[key]
    os.environ.update(env)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` image-decoding processes (started on first use) that shards can share."""
    ctx = multiprocessing.get_context("forkserver")  # fork is unsafe from a threaded orchestrator
    ctx.set_forkserver_preload([__name__])  # workers fork from a server that has imported this module already
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_env, initargs=(env,))


def ordered_map(uri: str, cfg: IngestConfig, items: Iterable[tuple], workers: int,
                pool: ProcessPoolExecutor | None = None) -> Iterator[dict]:
    """process_record over `items` (its arguments after `cfg`) in order; with workers > 1 a process pool
    (`pool`, else a new one) with a bounded window."""
    if workers <= 1:
        for item in items:
            yield process_record(uri, cfg, *item)
        return
    if pool is None:
        with process_pool(workers) as own:
            yield from ordered_map(uri, cfg, items, workers, own)
        return
    window: deque[Future] = deque()
    batch: list[tuple] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            window.append(pool.submit(_process_batch, uri, cfg, batch))
            batch = []
            while len(window) >= workers * 4:
                yield from window.popleft().result()
    if batch:
        window.append(pool.submit(_process_batch, uri, cfg, batch))
    while window:
        yield from window.popleft().result()
