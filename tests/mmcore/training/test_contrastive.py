from __future__ import annotations

import numpy as np
import torch

from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.dataset import SampleSet
from mmcore.training.contrastive import ENCODER_FILE, load_encoder, pretrain

ENC = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=8, grid=2)
CFG = PretrainConfig(epochs=2, batch_size=4, device="cpu")


def _samples(n: int, with_captions: bool = True) -> SampleSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
    caps = [[[2, 4 + i % 5, 3], [2, 9, 3]] if with_captions or i % 2 else [] for i in range(n)]
    return SampleSet([str(i) for i in range(n)], ["train"] * n, images, [[]] * n, caps, [[]] * n, [[]] * n)


def test_pretrain_writes_an_encoder_and_skips_qa_only_records(tmp_path):
    model, result = pretrain(_samples(10, with_captions=False), _samples(4), ENC, CFG, vocab_size=20,
                             out_dir=tmp_path, device=torch.device("cpu"), resume_key="k")
    assert len(result.history) == 2 and "val_t2i_r1" in result.history[-1]
    loaded = load_encoder(tmp_path / ENCODER_FILE)
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert torch.allclose(loaded.encode_image(x).embedding, model.eval().encode_image(x).embedding, atol=1e-6)


def test_finished_run_with_the_same_key_is_not_redone(tmp_path):
    args = (_samples(8), _samples(4), ENC, CFG, 20, tmp_path, torch.device("cpu"))
    pretrain(*args, resume_key="same")
    first = (tmp_path / ENCODER_FILE).read_bytes()
    _, again = pretrain(*args, resume_key="same")
    assert again.resumed_from == 2 and (tmp_path / ENCODER_FILE).read_bytes() == first


def test_stage_settings_reach_the_loop(tmp_path):
    from mmcore.training.loop import stage_fit_config

    cfg = PretrainConfig(epochs=6, batch_size=4, device="cpu", precision="bf16", accumulate=2, patience=1)
    fit_cfg = stage_fit_config(cfg, 3, "val_t2i_r1", "max", has_validation=True)
    assert (fit_cfg.precision, fit_cfg.accumulate, fit_cfg.monitor, fit_cfg.patience) == ("bf16", 2, "val_t2i_r1", 1)
    assert stage_fit_config(cfg, 3, "val_t2i_r1", "max", has_validation=False).monitor is None
    _, result = pretrain(_samples(8), _samples(4), ENC, cfg, 20, tmp_path, torch.device("cpu"), resume_key="k")
    assert result.best_epoch is not None and len(result.history) <= 6
    assert result.history[result.best_epoch]["val_t2i_r1"] == max(h["val_t2i_r1"] for h in result.history)
