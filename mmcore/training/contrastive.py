"""Contrastive pretraining of the dual encoder on image-caption pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from mmcore import integrity
from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.augment import augment_batch, flippable
from mmcore.data.dataset import SampleSet
from mmcore.data.stream import PairStream
from mmcore.io import save_torch
from mmcore.losses import contrastive_loss
from mmcore.metrics import retrieval_metrics
from mmcore.models.contrastive import DualEncoder, build_dual_encoder
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training import distributed
from mmcore.training.loop import (
    EpochCallback,
    FitConfig,
    FitResult,
    StepCallback,
    epoch_order,
    fit,
    pad_batch,
    seed_everything,
    stage_fit_config,
)


def with_captions(data: SampleSet) -> SampleSet:
    """Only samples that have a caption take part in image-text pairs (QA-only records do not)."""
    keep = [i for i, caps in enumerate(data.caption_ids) if caps]
    if len(keep) == len(data):
        return data
    pick = lambda items: [items[i] for i in keep]  # noqa: E731
    return SampleSet(pick(data.sample_ids), pick(data.splits), data.images[keep], pick(data.captions),
                     pick(data.caption_ids), pick(data.qa), pick(data.question_ids))


class Augment(NamedTuple):
    """What `pretrain.augment` needs per sample set: the crop scale, and which samples may be mirrored."""

    scale: tuple[float, float]
    may_flip: torch.Tensor  # (N,) bool, see augment.flippable


def _pair_batches(data: SampleSet, batch_size: int, seed: int, epoch: int, device: torch.device,
                  groups: list[list[int]] | None = None, augment: Augment | None = None,
                  extra: Callable[[list[int]], tuple[torch.Tensor, ...]] | None = None
                  ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Each image once per epoch, paired with one of its captions drawn at random.

    With `groups` (hard negatives, see `neighbour_groups`) the epoch is those groups in their order, so
    the images of a group share a batch; otherwise a seeded shuffle. Under torchrun each rank takes its
    share of the epoch (`distributed.shard`, of whole groups) in batches of batch_size / world, so a step
    still sees batch_size pairs in all, and the loss gathers every rank's pairs as negatives
    (`contrastive_loss`). Every rank's batches have the same sizes, which gathering needs: a rank whose
    groups hold fewer images than another's repeats its first ones.
    `augment` crops and flips the images (mmcore/data/augment.py) with draws of their own generator, so
    the caption picks are the same with it or without. `extra(indices)` adds tensors of the batch's samples
    (the joint objective: their questions).
    """
    if groups is None:
        order = distributed.shard(epoch_order(len(data), seed, epoch))
    else:
        world = distributed.world()
        shares = [distributed.shard(torch.arange(len(groups)), r, world).tolist() for r in range(world)]
        longest = max(sum(len(groups[g]) for g in share) for share in shares)
        mine = [i for g in shares[distributed.rank()] for i in groups[g]]
        order = torch.tensor((mine * -(-longest // max(len(mine), 1)))[:longest], dtype=torch.long)
    batch_size = max(2, batch_size // distributed.world())
    gen = torch.Generator().manual_seed(seed * 7919 + epoch + 1_000_003 * distributed.rank())
    aug_gen = torch.Generator().manual_seed(seed * 7919 + epoch + 1_000_003 * distributed.rank() + 2**40)
    for start in range(0, len(order) - 1, batch_size):
        idx = order[start : start + batch_size].tolist()
        if len(idx) < 2:  # a one-pair batch has no negatives
            continue
        picks = [data.caption_ids[i][int(torch.randint(len(data.caption_ids[i]), (1,), generator=gen))] for i in idx]
        images = torch.from_numpy(data.images[idx]).to(device)  # (B, 3, S, S) uint8
        if augment is not None:
            images = augment_batch(images, augment.may_flip[idx], augment.scale, aug_gen)
        yield (images, pad_batch(picks).to(device), *(extra(idx) if extra is not None else ()))


def _stream_batches(stream: PairStream, cfg: PretrainConfig, device: torch.device) -> Callable[..., Iterator]:
    """`batches(epoch, skip=0)` of a streamed training split: this rank's batches after the first `skip`, which
    the stream passes over without decoding them. Augmentation draws from a generator seeded per batch, so a
    resumed epoch crops and flips its remaining batches as the unbroken one did."""

    def batches(epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for n, (images, ids, may_flip) in enumerate(stream.loader(epoch, cfg.loader_workers, skip), start=skip):
            images = images.to(device)
            if cfg.augment:
                gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 1_000_003 + n + 2**40)
                images = augment_batch(images, may_flip, cfg.crop_scale, gen)
            yield images, ids.to(device)

    batches.skips = True  # type: ignore[attr-defined]  (see loop.epoch_batches)
    return batches


@torch.no_grad()
def neighbour_groups(embeddings: torch.Tensor, order: torch.Tensor, size: int) -> list[list[int]]:
    """Splits samples into groups of `size` that lie close together in embedding space (hard negatives).

    Greedy, in `order`: each sample not yet placed takes the `size - 1` placed-nowhere samples most
    similar to it (cosine of unit embeddings). Batches made of whole groups then hold images the model
    still confuses, e.g. the same layout in other colours, which random batches of a small dataset
    rarely do: the loss has to learn what tells them apart. Every sample is in exactly one group.
    """
    sim = embeddings @ embeddings.t()  # (N, N)
    free = torch.ones(len(embeddings), dtype=torch.bool)
    groups = []
    for anchor in order.tolist():
        if not free[anchor]:
            continue
        sim[anchor, anchor] = float("inf")  # the anchor first
        take = sim[anchor].masked_fill(~free, float("-inf")).topk(min(size, int(free.sum()))).indices
        free[take] = False
        groups.append(take.tolist())
    return groups


def _hard_negative_groups(model: DualEncoder, data: SampleSet, cfg: PretrainConfig, epoch: int,
                          device: torch.device) -> list[list[int]] | None:
    """This epoch's neighbour groups, from the model as it is now (None before `hard_from_epoch`)."""
    if cfg.hard_negatives < 2 or epoch < cfg.hard_from_epoch:
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        emb = torch.cat([model.encode_image(torch.from_numpy(data.images[i : i + 256]).to(device)).embedding.cpu()
                         for i in range(0, len(data), 256)])
    model.train(was_training)
    return neighbour_groups(emb, epoch_order(len(data), cfg.seed, epoch), cfg.hard_negatives)


@torch.no_grad()
def embed_pairs(model: DualEncoder, images: np.ndarray, caption_ids: list[list[list[int]]],
                device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeds every image and every caption: (N, D) images, (M, D) texts, (M,) image index per text."""
    model.eval()
    img = [model.encode_image(torch.from_numpy(images[i : i + batch_size]).to(device)).embedding.cpu()
           for i in range(0, len(images), batch_size)]
    flat = [(i, ids) for i, caps in enumerate(caption_ids) for ids in caps]
    txt = [model.encode_text(pad_batch([ids for _, ids in flat[i : i + batch_size]]).to(device)).cpu()
           for i in range(0, len(flat), batch_size)]
    return torch.cat(img).numpy(), torch.cat(txt).numpy(), np.array([i for i, _ in flat])


def retrieval_validation(model: DualEncoder, val: SampleSet, device: torch.device) -> dict[str, float]:
    """Recall at 1 both ways and text-to-image recall at 5 on the validation pairs (none without any)."""
    if len(val) == 0:
        return {}
    img, txt, owner = embed_pairs(model, val.images, val.caption_ids, device)
    same = [" ".join(map(str, ids)) for caps in val.caption_ids for ids in caps]  # the same tokens, text
    m = retrieval_metrics(img, txt, owner, ks=(1, 5), text_keys=np.array(same))
    return {"val_t2i_r1": m["t2i_r1"], "val_i2t_r1": m["i2t_r1"], "val_t2i_r5": m["t2i_r5"]}


def pretrain(train: SampleSet | PairStream, val: SampleSet, enc_cfg: EncoderConfig, cfg: PretrainConfig,
             vocab_size: int, out: PretrainDir, device: torch.device, on_epoch: EpochCallback | None = None,
             resume_key: str = "", tokenizer: TextTokenizer | None = None,
             on_step: StepCallback | None = None) -> tuple[DualEncoder, FitResult]:
    """Trains the dual encoder; checkpoints each epoch in `out` and writes its encoder at the end.

    A checkpoint left in `out` by a run with the same `resume_key` is continued, not redone.
    `tokenizer` (the one that made the token ids) is needed by the minilm text encoder only. `on_step`
    gets the loss of every `cfg.log_every_steps`-th batch (none when it is 0).
    """
    streamed = isinstance(train, PairStream)
    train, val = (train if streamed else with_captions(train)), with_captions(val)
    if not streamed and len(train) < 2:
        raise ValueError(f"contrastive pretraining needs at least 2 training samples with captions, got {len(train)}")
    seed_everything(cfg.seed)
    model = build_dual_encoder(enc_cfg, vocab_size, temperature=cfg.temperature, tokenizer=tokenizer).to(device)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(*batch)
        terms = contrastive_loss(out.image_embedding, out.text_embedding, out.logit_scale)
        terms["temperature"] = (1.0 / out.logit_scale).detach()
        return terms

    def validate() -> dict[str, float]:
        return retrieval_validation(model, val, device)

    if streamed:
        steps, batches = max(1, train.steps(0)), _stream_batches(train, cfg, device)
    else:
        per_rank, size = -(-len(train) // distributed.world()), max(2, cfg.batch_size // distributed.world())
        steps = max(1, -(-per_rank // size))
        augment = Augment(cfg.crop_scale, flippable(train.captions)) if cfg.augment else None

        def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            groups = _hard_negative_groups(model, train, cfg, epoch, device)
            return _pair_batches(train, cfg.batch_size, cfg.seed, epoch, device, groups, augment)

    fit_cfg = stage_fit_config(cfg, steps, "val_t2i_r1", "max", len(val) > 0, cfg.weight_decay)

    return model, fit_encoder(model, model, fit_cfg, batches, step, validate, cfg, enc_cfg, vocab_size, out,
                              on_epoch, resume_key, on_step)


def fit_encoder(model: torch.nn.Module, encoder: DualEncoder, fit_cfg: FitConfig, batches: Callable, step: Callable,
                validate: Callable, cfg: PretrainConfig, enc_cfg: EncoderConfig, vocab_size: int, out: PretrainDir,
                on_epoch: EpochCallback | None, resume_key: str, on_step: StepCallback | None) -> FitResult:
    """How every pretraining objective ends: `fit` (checkpoints in `out`, continued under `resume_key`, the
    loss logged every `cfg.log_every_steps` batches), then the main rank writes `encoder` to `out`."""
    result = fit(model, fit_cfg, batches, step, validate, checkpoint=out.checkpoint, on_epoch=on_epoch,
                 resume_key=resume_key, on_step=on_step if cfg.log_every_steps else None,
                 step_every=max(1, cfg.log_every_steps))
    if distributed.is_main():
        save_encoder(encoder, enc_cfg, vocab_size, out.encoder)
    return result


def save_encoder(model: DualEncoder, enc_cfg: EncoderConfig, vocab_size: int, path: str | Path) -> Path:
    state = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
             "config": enc_cfg.model_dump(mode="json"), "vocab_size": vocab_size}
    save_torch(state, path)
    return Path(path)


def load_encoder(path: str | Path, device: torch.device | str = "cpu", stage: str | None = "pretrain") -> DualEncoder:
    """Rebuilds the dual encoder from the file `save_encoder` wrote (plain tensors and dicts: loads with
    weights_only).

    A minilm text encoder gets its tokenizer back from the file too (its extra state). A file that does not
    load is a one-line `CorruptOutput` naming it and `stage`, the stage that writes it again.
    """
    state = integrity.load_torch(path, stage)
    no_weights = {"pretrained": False, "weights": None, "weights_sha256": None}  # they come from the file
    cfg = EncoderConfig.model_validate({**state["config"], **no_weights})
    model = build_dual_encoder(cfg, state["vocab_size"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
