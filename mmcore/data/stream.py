"""Training pairs streamed from the Parquet sample shards, for datasets bigger than memory.

    stream = PairStream(split_shards(processed, "train"), batch_size=32, seed=0)
    loader = stream.loader(epoch, workers=2)            # batches of (images uint8 (B,3,S,S), caption ids, may_flip)

Each epoch the shards are put in a seeded order and dealt to the consumers, every DataLoader worker of every
DDP rank, so each consumer reads and decodes only its own data: whole shards when there are at least as many
shards as consumers, else every C-th row of them. A consumer's rows pass through a bounded shuffle buffer of
undecoded rows; images are decoded only when they leave it, in the worker. Everything is seeded by (seed,
epoch, consumer), so an epoch is the same every time it is read, and `skip` batches can be passed over
without decoding them: a run resumed in the middle of an epoch goes on with the batches it had not seen.

Every rank gets the same number of batches (`steps`), which DDP needs: each consumer yields only full
batches, and a rank stops after the fewest batches any rank has.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmcore.catalog import ProcessedDir
from mmcore.data.augment import flippable
from mmcore.data.shards import decode_png
from mmcore.training import distributed
from mmcore.training.answers import dense_scores
from mmcore.training.loop import pad_batch
from mmcore.vqa_eval import AnswerScorer, human_answers

READ_ROWS = 256  # rows per Parquet read


@dataclass(frozen=True)
class Shard:
    samples: str  # a sample shard
    tokens: str  # its token shard (aligned row by row)
    split: str
    rows: int  # rows of the split in it, with at least one caption


def _seed(*parts: object) -> int:
    """A seed from `parts` that is the same in every process (Python's own hash of a str is not)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def split_shards(processed: ProcessedDir, split: str, column: str = "captions") -> list[Shard]:
    """The shards of `split`, with how many of their rows are in it and have a caption (`column` "qa": a
    question), read from those two columns only."""
    out = []
    for samples, tokens in zip(processed.listed("samples"), processed.listed("tokens"), strict=True):
        table = pq.read_table(samples, columns=["split", column])
        keep = pc.and_(pc.equal(table["split"], split), pc.greater(pc.list_value_length(table[column]), 0))
        rows = int(pc.sum(keep).as_py() or 0)
        if rows:
            out.append(Shard(str(samples), str(tokens), split, rows))
    return out


def _split_rows(shards: list[Shard], order: list[int], consumers: int, consumer: int) -> tuple[list[int], int]:
    """The shards (indexes into `shards`) a consumer reads, and how many rows of them are its own."""
    if len(shards) >= consumers:
        mine = order[consumer::consumers]
        return mine, sum(shards[i].rows for i in mine)
    total = sum(shards[i].rows for i in order)
    return order, len(range(consumer, total, consumers))  # every consumers-th row of all of them


def _round_robin(batches: list[int]) -> list[int]:
    """The worker of each batch of a rank, in the order a DataLoader delivers them from a fresh start: one from
    each worker that still has some, in turn."""
    left, order, worker = list(batches), [], 0
    while any(left):
        if left[worker]:
            order.append(worker)
            left[worker] -= 1
        worker = (worker + 1) % len(left)
    return order


def _in_order(delivered: Iterator[tuple[int, Any]], order: list[int]) -> Iterator[Any]:
    """The batches of `delivered` ((worker, batch) pairs) in the worker order `order`: a resumed DataLoader
    starts its turns at worker 0, wherever the interrupted epoch was (at most one batch per worker waits)."""
    waiting: dict[int, deque] = {}
    for want in order:
        while not waiting.get(want):
            worker, batch = next(delivered)
            waiting.setdefault(worker, deque()).append(batch)
        yield waiting[want].popleft()


class PairStream(IterableDataset):
    """One epoch of (image, one of its captions) pairs of the shards, in batches of `batch_size` (per rank)."""

    def __init__(self, shards: list[Shard], batch_size: int, seed: int = 0, buffer: int = 1024) -> None:
        if not shards:
            raise ValueError("no training samples with captions to stream")
        self.shards, self.batch_size, self.seed, self.buffer = shards, batch_size, seed, buffer
        self.epoch, self.skip, self.workers = 0, 0, 1
        self.rank, self.world = distributed.rank(), distributed.world()

    @property
    def samples(self) -> int:
        """Training samples in the shards (each epoch leaves out at most a batch per consumer)."""
        return sum(s.rows for s in self.shards)

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.shards)))
        random.Random(_seed(self.seed, epoch, "shards")).shuffle(order)
        return order

    def batches_per_worker(self, epoch: int, rank: int) -> list[int]:
        """Full batches each worker of `rank` makes in `epoch`."""
        consumers = self.world * self.workers
        return [_split_rows(self.shards, self._order(epoch), consumers, rank * self.workers + w)[1] // self.batch_size
                for w in range(self.workers)]

    def steps(self, epoch: int) -> int:
        """Batches every rank takes in `epoch`: the fewest any rank has."""
        return min(sum(self.batches_per_worker(epoch, r)) for r in range(self.world))

    def loader(self, epoch: int, workers: int = 0, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]]:
        """This rank's batches of `epoch` after the first `skip`, decoded by `workers` processes (0: here)."""
        self.epoch, self.skip, self.workers = epoch, skip, max(1, workers)
        steps = self.steps(epoch)
        loader = DataLoader(self, batch_size=None, num_workers=workers, persistent_workers=False,
                            prefetch_factor=4 if workers else None)
        order = _round_robin(self.batches_per_worker(epoch, self.rank))[skip:steps]
        return _in_order(iter(loader), order)

    def __iter__(self) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """(this worker, batch) of this worker's batches, after those the resumed epoch had already had."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        consumer = self.rank * self.workers + worker
        skip = _round_robin(self.batches_per_worker(self.epoch, self.rank))[:self.skip].count(worker) * self.batch_size
        rng = random.Random(_seed(self.seed, self.epoch, consumer, "pairs"))
        batch: list[tuple[bytes, Any]] = []
        for n, (png, item) in enumerate(self._shuffled(self._rows(consumer), rng)):
            item = self._draw(item, rng)  # drawn for skipped rows too: the same draws
            if n < skip:
                continue  # seen before the resume: passed over undecoded
            batch.append((png, item))
            if len(batch) == self.batch_size:
                yield worker, self._collate(batch)
                batch = []

    def _rows(self, consumer: int) -> Iterator[tuple[bytes, Any]]:
        """(png, what `_item` makes of the row) of the consumer's rows, in shard order."""
        consumers = self.world * self.workers
        mine, _ = _split_rows(self.shards, self._order(self.epoch), consumers, consumer)
        strided = len(self.shards) < consumers
        seen = 0
        for index in mine:
            shard = self.shards[index]
            samples = pq.ParquetFile(shard.samples).iter_batches(READ_ROWS, columns=["split", "image", *self.COLUMNS])
            tokens = pq.ParquetFile(shard.tokens).iter_batches(READ_ROWS, columns=list(self.TOKENS))
            for rows, ids in zip(samples, tokens, strict=True):
                values = [rows[c].to_pylist() for c in ("split", "image", *self.COLUMNS)]
                values += [ids[c].to_pylist() for c in self.TOKENS]
                for split, png, *row in zip(*values, strict=True):
                    item = self._item(*row) if split == shard.split else None
                    if item is None:
                        continue
                    seen += 1
                    if strided and (seen - 1) % consumers != consumer:
                        continue
                    yield png, item

    COLUMNS: tuple[str, ...] = ("captions",)  # sample columns `_item` takes, then the token columns
    TOKENS: tuple[str, ...] = ("caption_ids",)

    @staticmethod
    def _item(captions: list[dict], caption_ids: list[list[int]]) -> tuple[list[list[int]], bool] | None:
        """A row's captions' ids and whether it may be mirrored; None for a row without captions."""
        return (caption_ids, bool(flippable([captions])[0])) if caption_ids else None

    @staticmethod
    def _draw(item: tuple[list[list[int]], bool], rng: random.Random) -> tuple[list[int], bool]:
        """One of the row's captions, at random."""
        caption_ids, may_flip = item
        return caption_ids[rng.randrange(len(caption_ids))], may_flip

    def _shuffled(self, rows: Iterator, rng: random.Random) -> Iterator:
        """A bounded shuffle buffer: each row leaves it at a random place among the next `buffer` rows."""
        held: list = []
        for row in rows:
            held.append(row)
            if len(held) >= self.buffer:
                yield held.pop(rng.randrange(len(held)))
        while held:
            yield held.pop(rng.randrange(len(held)))

    @staticmethod
    def _collate(batch: list[tuple[bytes, tuple[list[int], bool]]]) -> tuple[torch.Tensor, ...]:
        images = torch.from_numpy(np.stack([decode_png(png) for png, _ in batch]))
        return images, pad_batch([ids for _, (ids, _) in batch]), torch.tensor([flip for _, (_, flip) in batch])


class QuestionStream(PairStream):
    """One epoch of images with all their questions, for VQA pretraining: batches of (images (B, 3, S, S), the
    image row of each question (Q,), questions (Q, T), targets: answer classes (Q,) or soft scores (Q, A)),
    the targets as `mmcore.training.answers` makes them from `answers` (the classes)."""

    COLUMNS = ("qa",)
    TOKENS = ("question_ids",)

    def __init__(self, shards: list[Shard], batch_size: int, answers: list[str], soft: bool, seed: int = 0,
                 buffer: int = 1024) -> None:
        super().__init__(shards, batch_size, seed, buffer)
        self.answers, self.soft = answers, soft
        self.index = {a: i for i, a in enumerate(answers)}
        self.scorer = AnswerScorer(answers) if soft else None

    def _item(self, qa: list[dict], question_ids: list[list[int]]) -> list[tuple[list[int], Any]] | None:
        if not question_ids:
            return None
        if self.scorer is not None:
            return [(ids, self.scorer.scores(human_answers(q))) for q, ids in zip(qa, question_ids, strict=True)]
        return [(ids, self.index.get(q["answer"], -1)) for q, ids in zip(qa, question_ids, strict=True)]

    @staticmethod
    def _draw(item: Any, rng: random.Random) -> Any:
        return item

    def _collate(self, batch: list[tuple[bytes, list[tuple[list[int], Any]]]]) -> tuple[torch.Tensor, ...]:
        images = torch.from_numpy(np.stack([decode_png(png) for png, _ in batch]))
        owner = [j for j, (_, qs) in enumerate(batch) for _ in qs]
        flat = [q for _, qs in batch for q in qs]
        targets = [t for _, t in flat]
        y = dense_scores(targets, len(self.answers)) if self.soft else torch.tensor(targets, dtype=torch.long)
        return images, torch.tensor(owner), pad_batch([ids for ids, _ in flat]), y
