"""Supervised pretraining of the image encoder on question answering, for data without captions.

Contrastive pretraining needs image-caption pairs. A VQA dataset such as easy-VQA has questions and
answers only, so its image encoder is trained end to end through a VQA head instead: the CNN learns
the features that answer the questions, and the later stages (frozen features, heads) run unchanged.
The text tower of the dual encoder is not trained by this objective, so text-to-image search is not
meaningful for such a model (evaluation reports no retrieval metrics for data without captions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.dataset import SampleSet
from mmcore.data.stream import PairStream, QuestionStream
from mmcore.losses import classification_loss, soft_score_loss
from mmcore.models.builders import HeadDims, build_vqa
from mmcore.models.contrastive import DualEncoder, build_dual_encoder
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training import distributed
from mmcore.training.answers import QA, answer_vocabulary, dense_scores, several_answers, soft_targets
from mmcore.training.contrastive import fit_encoder, pretrain
from mmcore.training.loop import (
    EpochCallback,
    FitResult,
    StepCallback,
    epoch_order,
    pad_batch,
    seed_everything,
    stage_fit_config,
)

OBJECTIVES = ("contrastive", "vqa", "joint")


def resolve_objective(objective: str, train: SampleSet) -> str:
    """`auto` means contrastive when the training samples have captions, else VQA. `joint` needs both."""
    if objective == "joint" and not (any(train.caption_ids) and any(train.question_ids)):
        raise ValueError("pretrain.objective=joint needs training samples with captions and with questions; this "
                         "training split lacks one of them: choose contrastive, vqa or auto")
    if objective in OBJECTIVES:
        return objective
    if objective != "auto":
        raise ValueError(f"unknown pretraining objective {objective!r}; choose auto or one of {list(OBJECTIVES)}")
    if any(train.caption_ids):
        return "contrastive"
    if any(train.question_ids):
        return "vqa"
    raise ValueError("the training split has neither captions nor questions: nothing to pretrain on")


def pretrain_encoder(train: SampleSet | PairStream, val: SampleSet, enc_cfg: EncoderConfig, cfg: PretrainConfig,
                     vocab_size: int, out: PretrainDir, device: torch.device, on_epoch: EpochCallback | None = None,
                     resume_key: str = "", tokenizer: TextTokenizer | None = None,
                     on_step: StepCallback | None = None) -> tuple[str, DualEncoder, FitResult]:
    """Pretrains with the objective `cfg.objective` resolves to; returns it with the model and the fit result.

    `tokenizer` (the one that made the token ids) is needed by the minilm text encoder only; `on_step`
    gets every `cfg.log_every_steps`-th batch's loss.
    """
    if isinstance(train, PairStream):  # the stream's kind is the objective (mmcore.stages.pretrain chose it)
        objective = "vqa" if isinstance(train, QuestionStream) else "contrastive"
    else:
        objective = resolve_objective(cfg.objective, train)
    from mmcore.training.joint import pretrain_joint  # it builds on this module

    train_fn = {"contrastive": pretrain, "vqa": pretrain_vqa, "joint": pretrain_joint}[objective]
    model, result = train_fn(train, val, enc_cfg, cfg, vocab_size, out, device, on_epoch, resume_key, tokenizer,
                             on_step)
    return objective, model, result


Target = int | dict[int, float]  # an answer class (-1: unseen in training), or soft scores {class: score}
Questions = list[list[tuple[list[int], Target]]]  # per sample: (question ids, target) of each question


def _questions(data: SampleSet, index: dict[str, int], soft: list[dict[int, float]] | None) -> Questions:
    """Per sample: (question ids, target) of each question; `soft` (from `soft_targets`) replaces the classes."""
    scores = iter(soft) if soft is not None else None
    return [[(ids, next(scores) if scores is not None else index.get(qa["answer"], -1))
             for qa, ids in zip(qas, qids, strict=True)]
            for qas, qids in zip(data.qa, data.question_ids, strict=True)]


def stream_targets(train_qa: QA) -> tuple[list[str], bool]:
    """The answer classes of the training questions, and whether they train on soft scores."""
    answers = answer_vocabulary(train_qa)
    if not answers:
        raise ValueError("VQA pretraining needs questions with answers in the training split; it has none")
    return answers, several_answers(train_qa)


def targets(train: SampleSet | QuestionStream, val: SampleSet) -> tuple[list[str], Questions, Questions, bool]:
    """The answer classes, the questions of each split with their targets (a stream makes its own, so none
    here), and whether those are soft scores."""
    streamed = isinstance(train, QuestionStream)
    answers, soft = (train.answers, train.soft) if streamed else stream_targets(train.qa)
    index = {a: i for i, a in enumerate(answers)}
    train_questions = [] if streamed else _questions(train, index, soft_targets(train.qa, answers))
    return answers, train_questions, _questions(val, index, soft_targets(val.qa, answers) if soft else None), soft


def encoder_with_head(enc_cfg: EncoderConfig, cfg: PretrainConfig, vocab_size: int, n_answers: int,
                      tokenizer: TextTokenizer | None, text: bool = False) -> tuple[DualEncoder, nn.Module]:
    """The dual encoder and a VQA head on its image features; only the image tower and the head train, unless
    `text` (the joint objective trains the text tower and the projections too)."""
    encoder = build_dual_encoder(enc_cfg, vocab_size, temperature=cfg.temperature, tokenizer=tokenizer)
    enc = encoder.image_encoder
    dims = HeadDims(vocab_size, enc.grid_channels, enc.out_channels, enc.grid**2, enc_cfg.text_hidden,
                    enc_cfg.word_dim)
    head = build_vqa(dims, n_answers)
    if text:
        return encoder, head
    # The text tower and the projections play no part in answering: frozen, they stay out of the optimizer
    # and out of DDP's gradient reduction (which fails on parameters that get no gradient).
    for part in (encoder.text_encoder, encoder.text_proj, encoder.image_proj):
        part.requires_grad_(False)
    encoder.log_scale.requires_grad_(False)
    return encoder, head


def question_rows(qs: Questions, idx: list[int], n_answers: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The questions of samples idx: the batch row of each one's image (Q,), the questions (Q, T), and the
    targets: answer classes (Q,), or soft scores (Q, A). Q may be 0."""
    owner = [j for j, i in enumerate(idx) for _ in qs[i]]
    flat = [q for i in idx for q in qs[i]]
    targets = [q[1] for q in flat]
    y = (dense_scores(targets, n_answers) if targets and isinstance(targets[0], dict)
         else torch.tensor(targets, dtype=torch.long))
    ids = pad_batch([q[0] for q in flat]) if flat else torch.zeros(0, 1, dtype=torch.long)
    return torch.tensor(owner, dtype=torch.long, device=device), ids.to(device), y.to(device)


def _batch(data: SampleSet, qs: Questions, idx: list[int], n_answers: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images idx (B, 3, S, S) and their `question_rows`."""
    return (torch.from_numpy(data.images[idx]).to(device), *question_rows(qs, idx, n_answers, device))


def question_accuracy(logits: Callable[..., torch.Tensor], val: SampleSet, val_questions: Questions,
                      n_answers: int, device: torch.device) -> dict[str, float]:
    """`val_vqa_acc` of `logits(images, owner, questions)` on the validation questions (soft scores where the
    targets are, else exact matches); none without questions."""
    rows = [i for i, q in enumerate(val_questions) if q]
    if not rows:
        return {}
    right, total = 0.0, 0
    for s in range(0, len(rows), 256):
        images, owner, q, y = _batch(val, val_questions, rows[s : s + 256], n_answers, device)
        pred = logits(images, owner, q).argmax(-1)
        hit = y.gather(1, pred[:, None]).squeeze(1) if y.dim() == 2 else (pred == y).double()
        right += float(hit.sum())
        total += len(y)
    return {"val_vqa_acc": right / total}


def _question_batches(train: SampleSet | QuestionStream, questions: Questions, keep: list[int], n_answers: int,
                      cfg: PretrainConfig, device: torch.device) -> Callable[..., Iterator[tuple[torch.Tensor, ...]]]:
    """`batches(epoch, skip=0)`: the epoch's batches of images with their questions after the first `skip`;
    a stream passes over those undecoded, the in-memory split by index (its batches draw nothing)."""

    def batches(epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        if isinstance(train, QuestionStream):
            for batch in train.loader(epoch, cfg.loader_workers, skip):
                yield tuple(t.to(device) for t in batch)
            return
        # Under torchrun: this rank's share of the epoch, in batches of batch_size / world images.
        order = [keep[i] for i in distributed.shard(epoch_order(len(keep), cfg.seed, epoch)).tolist()]
        size = max(1, cfg.batch_size // distributed.world())
        for s in range(skip * size, len(order), size):
            yield _batch(train, questions, order[s : s + size], n_answers, device)

    batches.skips = True  # type: ignore[attr-defined]  (see loop.epoch_batches)
    return batches


def pretrain_vqa(train: SampleSet | QuestionStream, val: SampleSet, enc_cfg: EncoderConfig, cfg: PretrainConfig,
                 vocab_size: int, out: PretrainDir, device: torch.device, on_epoch: EpochCallback | None = None,
                 resume_key: str = "", tokenizer: TextTokenizer | None = None,
                 on_step: StepCallback | None = None) -> tuple[DualEncoder, FitResult]:
    """Trains the image encoder with a VQA head on top; writes the dual encoder to `out`.

    Each batch is `cfg.batch_size` images with all of their questions: the CNN runs once per image. The answer
    classes and targets are the heads stage's (`mmcore.training.answers`): soft scores where questions have
    several human answers (VQA v2), else cross-entropy on the one answer; `val_vqa_acc` is the official accuracy.
    Checkpoints every epoch; a checkpoint with the same `resume_key` is continued, not redone.
    """
    answers, questions, val_questions, soft = targets(train, val)
    streamed = isinstance(train, QuestionStream)
    keep = [] if streamed else [i for i, q in enumerate(train.question_ids) if q]
    loss = soft_score_loss if soft else classification_loss
    seed_everything(cfg.seed)
    encoder, head = encoder_with_head(enc_cfg, cfg, vocab_size, len(answers), tokenizer)
    model = nn.ModuleDict({"encoder": encoder, "head": head}).to(device)

    def logits(images: torch.Tensor, owner: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        feats = encoder.encode_image(images)  # grid (B, G, g, g), pooled (B, C)
        return head(feats.grid, feats.pooled, q, owner)  # (Q, A)

    batches = _question_batches(train, questions, keep, len(answers), cfg, device)

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, owner, q, y = batch
        return loss(logits(images, owner, q), y)

    def validate() -> dict[str, float]:
        return question_accuracy(logits, val, val_questions, len(answers), device)

    per_rank, size = -(-len(keep) // distributed.world()), max(1, cfg.batch_size // distributed.world())
    steps = train.steps(0) if streamed else -(-per_rank // size)
    fit_cfg = stage_fit_config(cfg, max(1, steps), "val_vqa_acc", "max", any(val_questions), cfg.weight_decay)
    return encoder, fit_encoder(model, encoder, fit_cfg, batches, step, validate, cfg, enc_cfg, vocab_size, out,
                                on_epoch, resume_key, on_step)
