"""The head builders: typed dimensions, and parts created in the order that fixes the initial weights."""

from __future__ import annotations

import pytest
import torch

from mmcore.models.builders import (
    HeadDims,
    build_blind_vqa,
    build_captioner,
    build_generator,
    build_translator,
    build_vqa,
)

DIMS = HeadDims(vocab_size=30, grid_dim=6, pooled_dim=5, cells=4, hidden=16, word_dim=8)


def _fingerprint(model: torch.nn.Module) -> float:
    """Order-sensitive sum of the parameters: another creation or registration order changes it."""
    return sum((i + 1) * float(p.detach().double().sum()) for i, p in enumerate(model.parameters()))


# Computed with seed 0 from the heads' constructors before the builders existed
# (VQAHead(30, 6, 5, 4, 7, word_dim=8, hidden=16), CaptionDecoder(30, 6, 5, 4, word_dim=8, hidden=16),
# Translator(30, 2, 8, 16), TextGenerator(30, 2, 8, 16)): the builders must give the same weights.
@pytest.mark.parametrize(("build", "expected"), [
    (lambda: build_vqa(DIMS, 7), 68.5669620474473),
    (lambda: build_blind_vqa(DIMS, 7, "image"), 68.5669620474473),
    (lambda: build_captioner(DIMS), -179.60028831775708),
    (lambda: build_translator(DIMS, 2), -101.09413281094749),
    (lambda: build_generator(DIMS, 2), -1.1289831043104641),
])
def test_builders_create_the_same_initial_weights_as_before(build, expected):
    torch.manual_seed(0)
    assert _fingerprint(build()) == pytest.approx(expected, rel=1e-9)


def test_vqa_parts_are_registered_question_first():
    names = [n for n, _ in build_vqa(DIMS, 7).named_parameters()]
    assert names[0] == "question.embed.weight" and names[9] == "image.position"
    assert names[-6:] == ["attn.weight", "attn.bias", "classifier.0.weight", "classifier.0.bias",
                          "classifier.3.weight", "classifier.3.bias"]
    blind = build_blind_vqa(DIMS, 7, "question")
    assert [n for n, _ in blind.named_parameters()] == [f"head.{n}" for n in names]


def test_dims_are_typed_and_validated():
    assert DIMS.hidden == 16 and DIMS == HeadDims(30, 6, 5, 4, 16, 8)
    with pytest.raises(AttributeError):
        DIMS.hidden = 32  # frozen
    with pytest.raises(ValueError, match=r"positive integers.*'cells': 0"):
        HeadDims(30, 6, 5, 0, 16, 8)
    with pytest.raises(ValueError, match="hidden must be even.*15"):
        HeadDims(30, 6, 5, 4, 15, 8)


def test_blind_vqa_builder_names_the_valid_inputs():
    with pytest.raises(ValueError, match=r"unknown blind VQA input 'text'; choose one of \['question', 'image'\]"):
        build_blind_vqa(DIMS, 7, "text")
