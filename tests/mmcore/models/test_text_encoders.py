from __future__ import annotations

import pytest
import torch

from mmcore.config import EncoderConfig
from mmcore.losses import contrastive_loss
from mmcore.models.contrastive import build_dual_encoder
from mmcore.models.text_encoders import TransformerTextEncoder
from mmcore.training.contrastive import load_encoder, save_encoder

CFG = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=16, embed_dim=16, grid=2, text_encoder="transformer",
                    text_layers=2, text_heads=4, max_text_len=8)


def _encoder(**kw) -> TransformerTextEncoder:
    torch.manual_seed(0)
    return TransformerTextEncoder(50, word_dim=8, hidden=16, layers=2, heads=4, max_len=8, **kw).eval()


def test_transformer_output_shape_and_dtype():
    enc = _encoder()
    out = enc(torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]))
    assert enc.out_dim == 16
    assert out.shape == (2, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # different sentences, different embeddings


def test_transformer_ignores_right_padding():
    enc = _encoder()
    ids = torch.tensor([[2, 5, 6, 3]])
    # Padding past max_len (8) is fine: only real tokens need positions.
    padded = torch.tensor([[2, 5, 6, 3] + [0] * 9])
    # In a batch with a longer sentence the padding is masked, not trimmed: still the same embedding.
    batch = torch.tensor([[2, 5, 6, 3, 0, 0, 0], [2, 9, 9, 9, 9, 9, 3]])
    with torch.no_grad():
        ref = enc(ids)
        assert torch.allclose(enc(padded), ref, atol=1e-5)
        assert torch.allclose(enc(batch)[:1], ref, atol=1e-5)
        assert torch.isfinite(enc(torch.zeros(2, 4, dtype=torch.long))).all()  # all-padding rows: no NaN


def test_transformer_rejects_text_longer_than_its_positions():
    with pytest.raises(ValueError, match="max_len"):
        _encoder()(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        TransformerTextEncoder(50, hidden=10, heads=4)


def test_dual_encoder_with_transformer_learns_a_toy_batch():
    torch.manual_seed(0)
    model = build_dual_encoder(CFG, vocab_size=30)
    assert isinstance(model.text_encoder, TransformerTextEncoder)
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    ids = torch.tensor([[2, 4, 5, 3], [2, 6, 3, 0], [2, 7, 8, 9], [2, 10, 3, 0]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(images, ids)
        loss = contrastive_loss(out.image_embedding, out.text_embedding, out.logit_scale)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_transformer_encoder_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_dual_encoder(CFG, vocab_size=30).eval()
    path = save_encoder(model, CFG, 30, tmp_path / "encoder.pt")
    loaded = load_encoder(path)
    assert isinstance(loaded.text_encoder, TransformerTextEncoder)
    assert len(loaded.text_encoder.encoder.layers) == CFG.text_layers
    ids = torch.tensor([[2, 4, 5, 3], [2, 6, 3, 0]])
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(ids), model.encode_text(ids), atol=1e-6)


def test_unknown_text_encoder_names_the_choices():
    with pytest.raises(ValueError, match="transformer"):
        EncoderConfig(text_encoder="rnn9")
    # A config that skipped validation still fails clearly when the model is built.
    bad = CFG.model_copy(update={"text_encoder": "rnn9"})
    with pytest.raises(ValueError, match=r"'gru', 'lstm', 'transformer'"):
        build_dual_encoder(bad, vocab_size=30)
    with pytest.raises(ValueError, match="text_heads"):
        EncoderConfig(text_encoder="transformer", text_hidden=10, text_heads=4)
