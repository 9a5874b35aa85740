"""The VQA head built from injected parts, and the blind baselines that wrap it."""

from __future__ import annotations

import pytest
import torch

from mmcore.models.builders import HeadDims, build_vqa
from mmcore.models.heads import BlindVQA, GridProjector, VQAHead, blank_questions
from mmcore.models.text_encoders import RNNTextEncoder
from mmcore.training.loop import pad_batch

DIMS = HeadDims(vocab_size=30, grid_dim=6, pooled_dim=5, cells=4, hidden=16, word_dim=8)
QUESTIONS = [[2, 5, 6, 7, 3], [2, 9, 3], [2, 5, 6, 7, 3], [2, 11, 12, 13, 14, 15, 3]]  # [BOS] ... [EOS]


@pytest.fixture
def head() -> VQAHead:
    torch.manual_seed(0)
    return build_vqa(DIMS, 7).eval()


def _images(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, 4, generator=g), torch.randn(n, 5, generator=g)  # grid (B, G, cells), pooled (B, C)


def test_head_uses_the_injected_parts():
    question, image = RNNTextEncoder(30, 8, 8), GridProjector(6, 5, 4, 16)
    head = VQAHead(question, image, n_answers=7, hidden=16)
    assert head.question is question and head.image is image
    assert head(*_images(0), pad_batch(QUESTIONS)).shape == (4, 7)
    with pytest.raises(ValueError, match="vectors of 32, the head expects hidden=16"):
        VQAHead(RNNTextEncoder(30, 8, 16), image, n_answers=7, hidden=16)


def test_question_only_baseline_ignores_the_image(head):
    blind = BlindVQA(head, "question").eval()
    q = pad_batch(QUESTIONS)
    grid, pooled = _images(0)
    with torch.no_grad():
        a = blind(grid, pooled, q)
        b = blind(*_images(1), q)
        zeroed = head(torch.zeros_like(grid), torch.zeros_like(pooled), q)
        seeing = head(grid, pooled, q)
    assert torch.equal(a, b) and torch.equal(a, zeroed)
    assert not torch.equal(a, seeing)  # the wrapped head itself does look at the image
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])  # the question still counts


def test_image_only_baseline_sees_every_question_as_empty(head):
    blind = BlindVQA(head, "image").eval()
    grid, pooled = _images(0, 1)
    with torch.no_grad():
        # two different questions sharing their first and last token, with different padding around them
        a = blind(grid, pooled, pad_batch([[2, 5, 6, 7, 3]]))
        b = blind(grid, pooled, pad_batch([[2, 9, 3], [2, 1, 1, 1, 1, 1, 1, 3]])[:1])
        empty = head(grid, pooled, torch.tensor([[2, 3]]))
        other_image = blind(*_images(1, 1), pad_batch([[2, 5, 6, 7, 3]]))
    assert torch.equal(a, b) and torch.equal(a, empty)
    assert not torch.equal(a, other_image)  # the image still counts


def test_blank_questions_keep_the_first_and_last_real_token():
    ragged = [[2, 5, 6, 3], [2, 3], [2], [4, 7, 7, 7, 7, 9]]
    expected = pad_batch([q[:1] + q[-1:] for q in ragged])  # the baselines' empty question, per list
    assert torch.equal(blank_questions(pad_batch(ragged)), expected)
    assert expected.tolist() == [[2, 3], [2, 3], [2, 2], [4, 9]]


def test_blind_baseline_passes_owner_and_gradients_through(head):
    blind = BlindVQA(head, "image").train()
    grid, pooled = _images(0, 2)
    owner = torch.tensor([0, 1, 1, 0])
    logits = blind(grid, pooled, pad_batch(QUESTIONS), owner)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert head.image.position.grad is not None and head.question.embed.weight.grad is not None


def test_unknown_blind_input_names_the_choices(head):
    with pytest.raises(ValueError, match=r"choose one of \['question', 'image'\]"):
        BlindVQA(head, "both")
