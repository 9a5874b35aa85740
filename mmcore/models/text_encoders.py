"""Recurrent text encoders (GRU or LSTM) over token ids."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNNTextEncoder(nn.Module):
    """Embeds token ids and returns the final hidden state of each direction, concatenated."""

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 128,
        hidden: int = 256,
        rnn: str = "gru",
        bidirectional: bool = True,
        pad_id: int = 0,
    ):
        super().__init__()
        if rnn not in RNNS:
            raise ValueError(f"unknown text rnn {rnn!r}; choose one of {sorted(RNNS)}")
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=pad_id)
        self.rnn = RNNS[rnn](word_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != self.pad_id).sum(dim=1).clamp(min=1).cpu()  # (B,)
        packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # LSTM returns (h, c); (layers*dirs, B, H)
        return torch.cat(list(h[-(2 if self.rnn.bidirectional else 1):]), dim=-1)  # (B, out_dim)
