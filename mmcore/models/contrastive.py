"""Image and text encoders aligned in one embedding space (a CLIP-style dual encoder)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import EncoderConfig
from mmcore.models.image_encoders import ImageEncoder, build_image_encoder
from mmcore.models.minilm import MiniLMTextEncoder
from mmcore.models.text_encoders import RNNS, RNNTextEncoder, TransformerTextEncoder
from mmcore.text.tokenizer import TextTokenizer

TextEncoder = RNNTextEncoder | TransformerTextEncoder | MiniLMTextEncoder
TEXT_ENCODERS = (*RNNS, "transformer", "minilm")  # the kinds EncoderConfig.text_encoder may name
# What the image embedding is projected from: the globally pooled last feature map, or the whole grid
# (every cell at every scale), which keeps where things are and what colour they are.
EMBED_FROM = ("pooled", "grid")


class ImageOutput(NamedTuple):
    grid: torch.Tensor  # (B, C, g, g)
    pooled: torch.Tensor  # (B, C)
    embedding: torch.Tensor  # (B, D), unit length


class ContrastiveOutput(NamedTuple):
    image_embedding: torch.Tensor  # (B, D)
    text_embedding: torch.Tensor  # (B, D)
    logit_scale: torch.Tensor  # () exp of the learned log inverse temperature


class DualEncoder(nn.Module):
    """Projects an image encoder's and a text encoder's outputs into a shared unit sphere.

    `embed_from="grid"` projects the flattened grid features instead of the pooled ones: a caption that
    names each object's position, colour and shape can then be matched cell by cell, where global
    pooling would have to encode every binding in the channels.
    """

    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextEncoder, embed_dim: int,
                 temperature: float = 0.07, embed_from: str = "pooled"):
        super().__init__()
        if embed_from not in EMBED_FROM:
            raise ValueError(f"unknown embed_from {embed_from!r}; choose one of {list(EMBED_FROM)}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.embed_from = embed_from
        width = (image_encoder.out_channels if embed_from == "pooled"
                 else image_encoder.grid_channels * image_encoder.grid**2)
        self.image_proj = nn.Linear(width, embed_dim)
        self.text_proj = nn.Linear(text_encoder.out_dim, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def encode_image(self, images: torch.Tensor) -> ImageOutput:
        feats = self.image_encoder(images)
        x = feats.pooled if self.embed_from == "pooled" else feats.grid.flatten(1)  # (B, C) or (B, G*g*g)
        emb = F.normalize(self.image_proj(x), dim=-1)
        return ImageOutput(feats.grid, feats.pooled, emb)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_encoder(ids)), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """The learned inverse temperature, clamped as CLIP does: a scale above 100 makes the softmax unstable."""
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> ContrastiveOutput:
        return ContrastiveOutput(self.encode_image(images).embedding, self.encode_text(ids), self.logit_scale())


def build_text_encoder(cfg: EncoderConfig, vocab_size: int, pad_id: int = 0,
                       tokenizer: TextTokenizer | None = None) -> TextEncoder:
    """The text encoder `cfg.text_encoder` names: a recurrent one (gru, lstm), a transformer or pretrained MiniLM.

    Only MiniLM uses `tokenizer` (it reads the ids back as text); `load_encoder` passes none, the
    checkpoint holds it.
    """
    if cfg.text_encoder == "minilm":
        return MiniLMTextEncoder(tokenizer)
    if cfg.text_encoder == "transformer":
        return TransformerTextEncoder(vocab_size, cfg.word_dim, cfg.text_hidden, cfg.text_layers, cfg.text_heads,
                                      cfg.max_text_len, pad_id=pad_id)
    if cfg.text_encoder in RNNS:
        return RNNTextEncoder(vocab_size, cfg.word_dim, cfg.text_hidden, cfg.text_encoder, cfg.bidirectional, pad_id)
    # EncoderConfig validates the name, but a config built without validation (model_construct) can reach here.
    raise ValueError(f"unknown text encoder {cfg.text_encoder!r}; choose one of {list(TEXT_ENCODERS)}")


def build_dual_encoder(cfg: EncoderConfig, vocab_size: int, pad_id: int = 0,
                       temperature: float = 0.07, tokenizer: TextTokenizer | None = None) -> DualEncoder:
    # Image first, then text: the order fixes how the seeded initialisation is drawn (results depend on it).
    image = build_image_encoder(cfg.image_arch, cfg.grid, cfg.image_weights, cfg.small_input, cfg.multiscale,
                                cfg.weights_sha256)
    text = build_text_encoder(cfg, vocab_size, pad_id, tokenizer)
    return DualEncoder(image, text, cfg.embed_dim, temperature, cfg.embed_from)
