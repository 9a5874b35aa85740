"""Losses. The metrics' tests are in tests/mmcore/metrics/ and tests/mmcore/evaluation/."""

from __future__ import annotations

import torch

from mmcore.losses import contrastive_loss


def test_contrastive_loss_prefers_aligned_pairs():
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = contrastive_loss(emb, emb, torch.tensor(20.0))
    shuffled = contrastive_loss(emb, emb.roll(1, dims=0), torch.tensor(20.0))
    assert aligned["loss"] < shuffled["loss"]
    assert set(aligned) == {"loss", "i2t_loss", "t2i_loss"}
