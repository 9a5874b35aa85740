"""Streaming training pairs from the sample shards (mmcore/data/stream.py): every training sample once per epoch,
each consumer (DataLoader worker, DDP rank) reading its own shards, the same epoch every time it is read,
another order the next epoch, equal batches on every rank, and a resumed epoch that goes on where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data.dataset import load_samples
from mmcore.data.stream import PairStream, QuestionStream, split_shards
from mmcore.training import distributed


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """90 synthetic images ingested into shards of 10 records; the train split's shards and its samples."""
    from mmcore.data.synth import generate_shapes
    from mmcore.stages import ingest

    root = tmp_path_factory.mktemp("stream")
    generate_shapes(root / "raw" / "smoke", 90, seed=5, image_size=32)
    cfg = load_config("smoke", {"data_root": str(root), "ingest.shard_size": 10, "ingest.image_size": 16})
    cat = Catalog.from_config(cfg)
    ingest.run(cfg, cat, workers=1)
    return split_shards(cat.processed, "train"), load_samples(cat.processed, ("train",)), cat


def _key(image: torch.Tensor) -> bytes:
    return image.numpy().tobytes()


def _epoch(stream: PairStream, epoch: int, workers: int = 0, skip: int = 0) -> list[tuple]:
    return [(_key(img), tuple(ids.tolist()), bool(flip)) for images, ids, flips in stream.loader(epoch, workers, skip)
            for img, ids, flip in zip(images, ids, flips, strict=True)]


def test_an_epoch_holds_each_training_sample_once_and_repeats_exactly(shards):
    found, samples, _ = shards
    assert len(found) > 4 and sum(s.rows for s in found) == len(samples)
    stream = PairStream(found, batch_size=4, seed=1, buffer=8)
    first = _epoch(stream, 0)
    images = {_key(torch.from_numpy(a)): i for i, a in enumerate(samples.images)}
    seen = [images[k] for k, _, _ in first]
    assert len(seen) == len(set(seen)) >= len(samples) - 3  # only the last partial batch is left out
    for k, ids, _ in first:  # each image with one of its own captions (right-padded with 0)
        unpadded = list(ids)
        while unpadded and unpadded[-1] == 0:
            unpadded.pop()
        assert unpadded in samples.caption_ids[images[k]]
    assert _epoch(stream, 0) == first  # the same epoch, read again
    assert [k for k, _, _ in _epoch(stream, 1)] != [k for k, _, _ in first]  # the next one in another order
    assert _epoch(stream, 0, workers=2) == _epoch(stream, 0, workers=2)  # also when decoded by workers


def test_workers_and_ranks_read_disjoint_shards_and_every_rank_gets_the_same_batches(shards, monkeypatch):
    found, samples, _ = shards
    stream = PairStream(found, batch_size=3, seed=2, buffer=4)
    alone = {k for k, _, _ in _epoch(stream, 0)}
    by_workers = [k for k, _, _ in _epoch(stream, 0, workers=2)]
    assert len(by_workers) == len(set(by_workers)) and set(by_workers) <= {
        _key(torch.from_numpy(a)) for a in samples.images}
    ranks = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world", lambda: 2)
        ranks.append(_epoch(PairStream(found, batch_size=3, seed=2, buffer=4), 0))
    assert len(ranks[0]) == len(ranks[1]) > 0  # DDP needs the same number of batches on every rank
    assert not {k for k, _, _ in ranks[0]} & {k for k, _, _ in ranks[1]}  # each rank its own samples
    assert len(alone) >= len(ranks[0]) * 2


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_resumed_after_k_batches_goes_on_with_the_batches_it_had_not_seen(shards, workers):
    found, _, _ = shards
    stream = PairStream(found, batch_size=4, seed=3, buffer=6)
    whole = list(stream.loader(1, workers))
    rest = list(stream.loader(1, workers, skip=5))
    assert len(rest) == len(whole) - 5
    for (a, b, c), (x, y, z) in zip(whole[5:], rest, strict=True):
        assert torch.equal(a, x) and torch.equal(b, y) and torch.equal(c, z)


def test_no_samples_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no training samples with captions to stream"):
        PairStream([], batch_size=2)
    assert Path(tmp_path).is_dir()


@pytest.mark.slow
def test_pretraining_from_the_stream_resumes_inside_an_epoch_bit_for_bit(shards, tmp_path):
    """Contrastive pretraining on the stream with a checkpoint every 2 steps: a run stopped in its second epoch
    and started again ends with the weights of an unbroken run, and its loss went down."""
    from mmcore.catalog import PretrainDir
    from mmcore.config import EncoderConfig, PretrainConfig
    from mmcore.data.dataset import load_tokenizer
    from mmcore.training.contrastive import pretrain

    found, _, cat = shards
    enc = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=8, grid=2)
    cfg = PretrainConfig(epochs=2, batch_size=8, lr=3e-3, device="cpu", data="stream", checkpoint_every=2,
                         augment=True, shuffle_buffer=16)
    vocab, val = load_tokenizer(cat.processed).vocab_size, load_samples(cat.processed, ("val",))

    def run(out: Path, stop_at: int | None = None):
        def on_step(n: int, metrics: dict) -> None:
            if n == stop_at:
                raise KeyboardInterrupt
        return pretrain(PairStream(found, 8, seed=0, buffer=16), val, enc, cfg.model_copy(update={
            "log_every_steps": 1}), vocab, PretrainDir(out), torch.device("cpu"), resume_key="k", on_step=on_step)

    whole, fitted = run(tmp_path / "whole")
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"]
    steps = PairStream(found, 8, seed=0).steps(0)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "stopped", stop_at=steps + 2)  # the third batch of the second epoch: saved after two
    assert torch.load(PretrainDir(tmp_path / "stopped").checkpoint, weights_only=True)["progress"]["batches"] == 2
    resumed, again = run(tmp_path / "stopped")
    assert again.resumed_from == 1 and again.history == fitted.history
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_question_stream_gives_each_image_with_all_its_questions_and_their_targets(shards):
    """VQA pretraining's stream: every training image once per epoch with all of its questions, the targets
    those the in-memory path gives them (classes of the training answers)."""
    from mmcore.training.vqa_pretrain import stream_targets, targets

    _, samples, cat = shards
    answers, soft = stream_targets(samples.qa)
    stream = QuestionStream(split_shards(cat.processed, "train", "qa"), 4, answers, soft, seed=1, buffer=8)
    _, questions, _, _ = targets(samples, load_samples(cat.processed, ("val",)))
    by_image = {_key(torch.from_numpy(a)): qs for a, qs in zip(samples.images, questions, strict=True)}
    seen = set()
    for images, owner, q, y in stream.loader(0, workers=2):
        assert len(owner) == len(q) == len(y) and owner.max() < len(images)
        for row, image in enumerate(images):
            mine = [i for i, o in enumerate(owner.tolist()) if o == row]
            expected = by_image[_key(image)]
            assert [t for _, t in expected] == y[mine].tolist()
            seen.add(_key(image))
    assert len(seen) >= len(samples) - 3 * 2  # at most a partial batch per worker left out


def test_the_pretrain_stage_streams_the_vqa_objective_too(shards):
    """`pretrain.data=stream` with the vqa objective: the stage trains the image encoder through the VQA head
    from the question stream and scores the validation questions."""
    from mmcore.stages import pretrain

    _, _, cat = shards
    cfg = load_config("smoke", {"data_root": str(cat.root), "ingest.shard_size": 10, "ingest.image_size": 16,
                                "pretrain.data": "stream", "pretrain.objective": "vqa", "pretrain.epochs": 1})
    streamed = Catalog.from_config(cfg)
    assert isinstance(pretrain.stream(cfg, streamed), QuestionStream)
    result = pretrain.run(cfg, streamed)
    assert result.objective == "vqa" and 0 <= result.final["val_vqa_acc"] <= 1
