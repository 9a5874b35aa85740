"""Joint pretraining: the contrastive loss and a VQA loss on one encoder, for data with captions and questions.

The contrastive objective alone can match a caption by the scene's layout, so the image encoder learns little
of what tells a red circle from a blue square in the same place; a VQA head on those frozen features then
misses colour and shape questions. Trained jointly, each batch of images is embedded once and both losses
reach the CNN: the captions of the batch against its images (InfoNCE, with the same hard-negative groups as
contrastive pretraining), and all the questions of the batch's images through a VQA head (the heads stage's
architecture without FiLM, so that binding the attributes to their objects is left to the encoder; soft scores
or cross-entropy as in `vqa_pretrain`). The loss is

    loss = contrastive_loss + pretrain.vqa_weight * vqa_loss

and both terms are logged by name (`train_contrastive_loss`, `train_vqa_loss`). Validation reports
retrieval (`val_t2i_r1`, the monitored metric) and `val_vqa_acc`. The VQA head serves only the training:
the encoder is what the stage writes, and the heads stage trains its own heads on the frozen features.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.augment import flippable
from mmcore.data.dataset import SampleSet
from mmcore.losses import classification_loss, contrastive_loss, soft_score_loss
from mmcore.models.contrastive import DualEncoder
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training import distributed
from mmcore.training.contrastive import (
    Augment,
    _hard_negative_groups,
    _pair_batches,
    fit_encoder,
    retrieval_validation,
    with_captions,
)
from mmcore.training.loop import EpochCallback, FitResult, StepCallback, seed_everything, stage_fit_config
from mmcore.training.vqa_pretrain import encoder_with_head, question_accuracy, question_rows, targets


def _may_flip(data: SampleSet) -> torch.Tensor:
    """Which samples a flip keeps true: none of their captions, questions or answers names a side."""
    texts = [caps + [{"text": f"{qa['question']} {qa['answer']}"} for qa in qas]
             for caps, qas in zip(data.captions, data.qa, strict=True)]
    return flippable(texts)


def pretrain_joint(train: SampleSet, val: SampleSet, enc_cfg: EncoderConfig, cfg: PretrainConfig, vocab_size: int,
                   out: PretrainDir, device: torch.device, on_epoch: EpochCallback | None = None,
                   resume_key: str = "", tokenizer: TextTokenizer | None = None,
                   on_step: StepCallback | None = None) -> tuple[DualEncoder, FitResult]:
    """Trains the dual encoder on both objectives; writes it to `out` (checkpoints each epoch, and a checkpoint
    with the same `resume_key` is continued). Samples without a caption take no part (their questions neither)."""
    train, val = with_captions(train), with_captions(val)
    if len(train) < 2:
        raise ValueError(f"joint pretraining needs at least 2 training samples with captions, got {len(train)}")
    answers, questions, val_questions, soft = targets(train, val)
    vqa_loss = soft_score_loss if soft else classification_loss
    seed_everything(cfg.seed)
    encoder, head = encoder_with_head(enc_cfg, cfg, vocab_size, len(answers), tokenizer, text=True)
    model = nn.ModuleDict({"encoder": encoder, "head": head}).to(device)

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, captions, owner, q, y = batch
        feats = encoder.encode_image(images)
        scale = encoder.logit_scale()
        terms = contrastive_loss(feats.embedding, encoder.encode_text(captions), scale)
        contrastive = terms.pop("loss")
        if len(q):
            vqa = vqa_loss(head(feats.grid, feats.pooled, q, owner), y)["loss"]
        else:  # images without questions: a zero that still reaches every head parameter, as DDP expects
            vqa = sum(p.sum() for p in head.parameters()) * 0.0
        return {"loss": contrastive + cfg.vqa_weight * vqa, "contrastive_loss": contrastive, "vqa_loss": vqa,
                **terms, "temperature": (1.0 / scale).detach()}

    def logits(images: torch.Tensor, owner: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        feats = encoder.encode_image(images)
        return head(feats.grid, feats.pooled, q, owner)

    def validate() -> dict[str, float]:
        return {**retrieval_validation(encoder, val, device),
                **question_accuracy(logits, val, val_questions, len(answers), device)}

    augment = Augment(cfg.crop_scale, _may_flip(train)) if cfg.augment else None

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        groups = _hard_negative_groups(encoder, train, cfg, epoch, device)
        return _pair_batches(train, cfg.batch_size, cfg.seed, epoch, device, groups, augment,
                             lambda idx: question_rows(questions, idx, len(answers), device))

    per_rank, size = -(-len(train) // distributed.world()), max(2, cfg.batch_size // distributed.world())
    fit_cfg = stage_fit_config(cfg, max(1, -(-per_rank // size)), "val_t2i_r1", "max", len(val) > 0,
                               cfg.weight_decay)
    return encoder, fit_encoder(model, encoder, fit_cfg, batches, step, validate, cfg, enc_cfg, vocab_size, out,
                                on_epoch, resume_key, on_step)
