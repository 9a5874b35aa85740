"""Text encoders over token ids: recurrent (GRU or LSTM) or a small Transformer.

Both map right-padded ids (B, T) long to (B, out_dim) float and ignore padding (id `pad_id`).
"""

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


class TransformerTextEncoder(nn.Module):
    """A small pre-norm Transformer encoder whose token states are mean-pooled over the real tokens.

    Masked mean pooling rather than a CLS token: it needs no extra token or position, and with few
    layers and little data every token contributes a gradient directly, which trains more stably.
    Attention is always bidirectional, so there is no `bidirectional` switch.

    Args:
        vocab_size: number of token ids.
        word_dim: token embedding size; projected to `hidden` when the two differ.
        hidden: model width (d_model) and output size `out_dim`.
        layers: number of encoder layers.
        heads: attention heads; must divide `hidden`.
        max_len: longest sequence (in real tokens) the learned positions cover.
        ff_mult: feed-forward width as a multiple of `hidden`.
        dropout: dropout inside the encoder layers (active in train mode only).
        pad_id: id of the padding token, masked out of attention and pooling.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 128,
        hidden: int = 256,
        layers: int = 2,
        heads: int = 4,
        max_len: int = 48,
        ff_mult: int = 4,
        dropout: float = 0.1,
        pad_id: int = 0,
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"transformer text encoder: hidden {hidden} must be divisible by heads {heads}")
        self.pad_id = pad_id
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=pad_id)
        self.in_proj = nn.Linear(word_dim, hidden) if word_dim != hidden else nn.Identity()
        self.pos = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.pos.weight, std=0.02)  # small, so positions start as a hint, not noise
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=ff_mult * hidden, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # Pre-norm layers leave the residual stream unnormalised: a final LayerNorm closes the stack.
        # Nested tensors are unsupported with norm_first (PyTorch warns and ignores them), so turn them off.
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)
        self.out_dim = hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids != self.pad_id  # (B, T)
        # Drop padding columns past the last real token in the batch: extra right padding then changes
        # nothing (not even float rounding), and the positions only need to cover real tokens.
        used = real.any(dim=0).nonzero()
        width = int(used[-1]) + 1 if len(used) else 1
        if width > self.max_len:
            raise ValueError(f"text of {width} tokens is longer than the encoder's max_len {self.max_len}")
        ids, real = ids[:, :width], real[:, :width].clone()  # (B, T')
        # An all-padding row would mask every key (NaN attention): let it attend to its first slot instead.
        real[:, 0] |= ~real.any(dim=1)
        pos = torch.arange(width, device=ids.device)  # (T',)
        x = self.in_proj(self.embed(ids)) + self.pos(pos)  # (B, T', H)
        x = self.encoder(x, src_key_padding_mask=~real)  # (B, T', H); True in the mask = ignore
        w = real.unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        return (x * w).sum(dim=1) / w.sum(dim=1)  # (B, H) mean over real tokens
