"""Losses, each returning its named terms so trainers can log every part."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcore.training import distributed


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over a batch of matching pairs: row i of each input belongs together.

    Under torchrun the negatives are global, as OpenCLIP computes them (gather_with_grad, local_loss): each
    rank scores its own B pairs against the pairs of every rank (all_gather with gradient), so its logits are
    (B, world * B). The mean of the ranks' losses is then the loss of one process on the whole batch, and the
    gradients DDP averages are that loss's gradients (tests/mmcore/test_losses_metrics.py, on 2 processes).
    """
    all_images, all_texts = distributed.gather_with_grad(image_emb), distributed.gather_with_grad(text_emb)
    i2t_logits = scale * image_emb @ all_texts.t()  # (B, world * B): this rank's images against every text
    t2i_logits = scale * text_emb @ all_images.t()
    target = torch.arange(image_emb.shape[0], device=image_emb.device) + distributed.rank() * image_emb.shape[0]
    i2t = F.cross_entropy(i2t_logits, target)
    t2i = F.cross_entropy(t2i_logits, target)
    return {"loss": (i2t + t2i) / 2, "i2t_loss": i2t, "t2i_loss": t2i}


def sequence_loss(logits: torch.Tensor, target: torch.Tensor, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Token cross-entropy for teacher-forced decoders, ignoring padding. logits (B, T, V), target (B, T)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad_id)
    return {"loss": loss, "token_loss": loss}


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    loss = F.cross_entropy(logits, target)
    acc = (logits.argmax(dim=-1) == target).float().mean()
    return {"loss": loss, "accuracy": acc.detach()}


def soft_score_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary cross-entropy of every class against its soft score in [0, 1], summed over the classes and averaged
    over the rows (the VQA v2 soft-score loss of bottom-up-top-down). logits, target (B, A). `accuracy` is the
    mean score of the argmax: for VQA targets, the official accuracy of the predicted answers."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
    score = target.gather(1, logits.argmax(dim=-1, keepdim=True)).mean()
    return {"loss": loss, "accuracy": score.detach()}
