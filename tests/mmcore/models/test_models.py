from __future__ import annotations

import pytest
import torch

from mmcore.config import EncoderConfig
from mmcore.models.builders import HeadDims, build_captioner, build_vqa
from mmcore.models.contrastive import build_dual_encoder
from mmcore.models.image_encoders import build_image_encoder
from mmcore.models.text_encoders import RNNTextEncoder


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18", "mobilenet_v3_small"])
def test_image_encoders_return_grid_and_pooled(arch):
    enc = build_image_encoder(arch, grid=2)
    out = enc(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.grid.shape == (2, enc.out_channels, 2, 2) == (2, enc.grid_channels, 2, 2)
    assert out.pooled.shape == (2, enc.out_channels)


def test_multiscale_grid_stacks_every_resolution():
    single = build_image_encoder("smallcnn", grid=4)
    multi = build_image_encoder("smallcnn", grid=4, multiscale=True)
    multi.load_state_dict(single.state_dict())
    x = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    a, b = single.eval()(x), multi.eval()(x)
    assert multi.grid_channels == 32 + 64 + 128 + 256  # the four blocks' outputs
    assert b.grid.shape == (2, 480, 4, 4)
    assert torch.allclose(b.grid[:, -256:], a.grid, atol=1e-5)  # the last scale is the plain grid
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)


def test_small_input_adaptation_keeps_more_resolution():
    x = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    small = build_image_encoder("resnet18", small_input=True).body(x.float())
    imagenet = build_image_encoder("resnet18", small_input=False).body(x.float())
    assert small.shape[-1] == 2 * imagenet.shape[-1]


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="resnet18"):
        build_image_encoder("vgg99")


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_text_encoder_ignores_padding(rnn):
    torch.manual_seed(0)
    enc = RNNTextEncoder(50, 8, 16, rnn=rnn).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    padded = torch.tensor([[2, 5, 6, 3, 0, 0, 0]])
    assert torch.allclose(enc(ids), enc(padded), atol=1e-6)
    assert enc(ids).shape == (1, 32)


def test_dual_encoder_embeddings_are_unit_vectors():
    cfg = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=16)
    model = build_dual_encoder(cfg, vocab_size=30)
    out = model(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.tensor([[2, 4, 3]] * 3))
    assert out.image_embedding.shape == out.text_embedding.shape == (3, 16)
    assert torch.allclose(out.text_embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(out.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-4)


def test_heads_shapes_and_greedy_decoding_stops_at_eos():
    grid, pooled = torch.randn(4, 24, 4), torch.randn(4, 16)
    dims = HeadDims(vocab_size=30, grid_dim=24, pooled_dim=16, cells=4, hidden=16, word_dim=8)
    vqa = build_vqa(dims, n_answers=7)
    assert vqa(grid, pooled, torch.tensor([[2, 5, 3]] * 4)).shape == (4, 7)
    dec = build_captioner(dims)
    assert dec(grid, pooled, torch.tensor([[2, 5, 6]] * 4)).shape == (4, 3, 30)
    with torch.no_grad():
        dec.out.bias.fill_(-1e4)
        dec.out.bias[3] = 1e4  # always predict EOS (id 3)
    out = dec.generate(grid, pooled, bos_id=2, eos_id=3, max_len=10)
    assert out.shape == (4, 1) and (out == 3).all()
