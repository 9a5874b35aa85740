"""The image encoder's input: uint8 images normalised with ImageNet mean/std in one place, at any size."""

from __future__ import annotations

import pytest
import torch

from mmcore.config import EncoderConfig
from mmcore.models.contrastive import build_dual_encoder
from mmcore.models.image_encoders import build_image_encoder

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_uint8_images_are_normalised_with_imagenet_statistics(arch):
    """Pretraining, extraction and serving all reach the body through ImageEncoder.forward (DualEncoder.
    encode_image), so this is the one normalisation, with pretrained weights or without."""
    torch.manual_seed(0)
    encoder = build_image_encoder(arch, grid=2).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        pooled = encoder(images).pooled
        by_hand = encoder.body((images.float() / 255 - MEAN) / STD).mean(dim=(2, 3))
    torch.testing.assert_close(pooled, by_hand)


def test_a_photo_sized_input_with_the_imagenet_stem():
    """224 px with small_input off: resnet18 ends at 7 x 7, pooled to the configured grid."""
    cfg = EncoderConfig(image_arch="resnet18", small_input=False, grid=2, multiscale=False, embed_dim=16,
                        word_dim=8, text_hidden=8)
    model = build_dual_encoder(cfg, vocab_size=20).eval()
    images = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        fmap = model.image_encoder.body(images.float())
        out = model.encode_image(images)
    assert fmap.shape[-2:] == (7, 7) and out.grid.shape == (1, 512, 2, 2) and out.embedding.shape == (1, 16)
