"""Named builders of the task heads from one typed set of dimensions.

Each builder creates a head's parts in a fixed order: that order fixes the random initialisation, so
the same seed gives the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mmcore.models.heads import BlindVQA, CaptionDecoder, GridProjector, VQAHead
from mmcore.models.text_encoders import RNNTextEncoder
from mmcore.models.text_heads import TextGenerator, Translator


@dataclass(frozen=True)
class HeadDims:
    """Sizes every head is built from: the data's (vocabulary, image features) and the config's widths."""

    vocab_size: int  # token ids of the shared tokenizer
    grid_dim: int  # channels of a grid cell of the frozen image features
    pooled_dim: int  # channels of the pooled image feature
    cells: int  # grid cells per image (g * g)
    hidden: int  # width of every head; even: the question encoder has hidden // 2 per direction
    word_dim: int  # word embedding size

    def __post_init__(self) -> None:
        bad = {f.name: getattr(self, f.name) for f in fields(self)
               if not isinstance(getattr(self, f.name), int) or getattr(self, f.name) < 1}
        if bad:
            raise ValueError(f"head dimensions must be positive integers; got {bad}")
        if self.hidden % 2:
            raise ValueError(f"hidden must be even (the question encoder has hidden // 2 per direction), "
                             f"got {self.hidden}")


def build_vqa(dims: HeadDims, n_answers: int, glimpses: int = 2, film: bool = False) -> VQAHead:
    """Bidirectional GRU question encoder + grid projector (+ FiLM of the cells by the question) + attention
    classifier."""
    question = RNNTextEncoder(dims.vocab_size, dims.word_dim, dims.hidden // 2, "gru", True)  # out: hidden
    image = GridProjector(dims.grid_dim, dims.pooled_dim, dims.cells, dims.hidden)
    return VQAHead(question, image, n_answers, dims.hidden, glimpses, film)


def build_blind_vqa(dims: HeadDims, n_answers: int, sees: str, film: bool = False) -> BlindVQA:
    """The VQA head of `build_vqa` seeing only `sees` ("question" or "image")."""
    return BlindVQA(build_vqa(dims, n_answers, film=film), sees)


def build_captioner(dims: HeadDims) -> CaptionDecoder:
    return CaptionDecoder(dims.vocab_size, dims.grid_dim, dims.pooled_dim, dims.cells, dims.word_dim, dims.hidden)


def build_translator(dims: HeadDims, n_langs: int) -> Translator:
    return Translator(dims.vocab_size, n_langs, dims.word_dim, dims.hidden)


def build_generator(dims: HeadDims, n_langs: int) -> TextGenerator:
    return TextGenerator(dims.vocab_size, n_langs, dims.word_dim, dims.hidden)
