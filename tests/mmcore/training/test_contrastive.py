from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmcore.catalog import BundleDir, PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.dataset import SampleSet
from mmcore.integrity import CorruptOutput
from mmcore.training.contrastive import load_encoder, pretrain
from tests.mmcore.stages.corruptkit import truncate

ENC = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=8, grid=2)
CFG = PretrainConfig(epochs=2, batch_size=4, device="cpu")
CPU = torch.device("cpu")


def _samples(n: int, with_captions: bool = True) -> SampleSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
    caps = [[[2, 4 + i % 5, 3], [2, 9, 3]] if with_captions or i % 2 else [] for i in range(n)]
    return SampleSet([str(i) for i in range(n)], ["train"] * n, images, [[]] * n, caps, [[]] * n, [[]] * n)


def test_pretrain_writes_an_encoder_and_skips_qa_only_records(tmp_path):
    model, result = pretrain(_samples(10, with_captions=False), _samples(4), ENC, CFG, vocab_size=20,
                             out=PretrainDir(tmp_path), device=torch.device("cpu"), resume_key="k")
    assert len(result.history) == 2 and "val_t2i_r1" in result.history[-1]
    loaded = load_encoder(PretrainDir(tmp_path).encoder)
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert torch.allclose(loaded.encode_image(x).embedding, model.eval().encode_image(x).embedding, atol=1e-6)


def test_finished_run_with_the_same_key_is_not_redone(tmp_path):
    args = (_samples(8), _samples(4), ENC, CFG, 20, PretrainDir(tmp_path), torch.device("cpu"))
    pretrain(*args, resume_key="same")
    first = (PretrainDir(tmp_path).encoder).read_bytes()
    _, again = pretrain(*args, resume_key="same")
    assert again.resumed_from == 2 and (PretrainDir(tmp_path).encoder).read_bytes() == first


def test_stage_settings_reach_the_loop(tmp_path):
    from mmcore.training.loop import stage_fit_config

    cfg = PretrainConfig(epochs=6, batch_size=4, device="cpu", precision="bf16", accumulate=2, patience=1)
    fit_cfg = stage_fit_config(cfg, 3, "val_t2i_r1", "max", has_validation=True)
    assert (fit_cfg.precision, fit_cfg.accumulate, fit_cfg.monitor, fit_cfg.patience) == ("bf16", 2, "val_t2i_r1", 1)
    assert stage_fit_config(cfg, 3, "val_t2i_r1", "max", has_validation=False).monitor is None
    _, result = pretrain(_samples(8), _samples(4), ENC, cfg, 20, PretrainDir(tmp_path), CPU, resume_key="k")
    assert result.best_epoch is not None and len(result.history) <= 6
    assert result.history[result.best_epoch]["val_t2i_r1"] == max(h["val_t2i_r1"] for h in result.history)


def test_grid_embedding_projects_every_cell_and_round_trips(tmp_path):
    enc = ENC.model_copy(update={"embed_from": "grid"})
    model, _ = pretrain(_samples(8), _samples(4), enc, CFG, 20, PretrainDir(tmp_path), CPU, resume_key="g")
    grid = model.image_encoder
    assert model.image_proj.in_features == grid.grid_channels * grid.grid**2
    loaded = load_encoder(PretrainDir(tmp_path).encoder)
    assert loaded.embed_from == "grid"
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    out = loaded.encode_image(x)
    assert torch.allclose(out.embedding, model.eval().encode_image(x).embedding, atol=1e-6)
    # the embedding is a projection of every grid cell, not of the pooled map
    expected = torch.nn.functional.normalize(loaded.image_proj(out.grid.flatten(1)), dim=-1)
    assert torch.allclose(out.embedding, expected, atol=1e-6)


def test_step_callback_gets_every_nth_batch(tmp_path):
    seen: list[tuple[int, float]] = []
    cfg = CFG.model_copy(update={"log_every_steps": 2})  # 12 samples, batch 4: 3 batches per epoch
    pretrain(_samples(12), _samples(4), ENC, cfg, 20, PretrainDir(tmp_path), CPU, resume_key="s",
             on_step=lambda step, terms: seen.append((step, terms["loss"])))
    assert [s for s, _ in seen] == [1, 4]  # batches 2 of each epoch, numbered from the start of training
    assert all(np.isfinite(v) for _, v in seen)
    off: list = []
    pretrain(_samples(12), _samples(4), ENC, CFG, 20, PretrainDir(tmp_path / "off"), CPU, resume_key="s",
             on_step=lambda step, terms: off.append(step))
    assert off == []  # log_every_steps 0: per epoch only


def test_neighbour_groups_put_close_embeddings_together():
    from mmcore.training.contrastive import neighbour_groups

    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)  # 5 clusters of 3 points each
    points = torch.nn.functional.normalize(centres.repeat_interleave(3, 0) + 0.01 * torch.randn(15, 16), dim=-1)
    groups = neighbour_groups(points, torch.randperm(15), 3)
    assert sorted(i for g in groups for i in g) == list(range(15))  # every sample exactly once
    assert sorted(sorted(g) for g in groups) == [[3 * c, 3 * c + 1, 3 * c + 2] for c in range(5)]
    uneven = neighbour_groups(points[:14], torch.arange(14), 4)
    assert sorted(i for g in uneven for i in g) == list(range(14)) and max(map(len, uneven)) == 4


def test_hard_negative_batches_hold_whole_groups(tmp_path, monkeypatch):
    from mmcore.training import contrastive

    seen: list[list[list[int]] | None] = []
    real = contrastive._pair_batches

    def spy(data, batch_size, seed, epoch, device, groups=None, augment=None):
        seen.append(groups)
        return real(data, batch_size, seed, epoch, device, groups, augment)

    monkeypatch.setattr(contrastive, "_pair_batches", spy)
    cfg = CFG.model_copy(update={"epochs": 3, "hard_negatives": 2, "hard_from_epoch": 1})
    _, result = pretrain(_samples(12), _samples(4), ENC, cfg, 20, PretrainDir(tmp_path), CPU, resume_key="h")
    assert len(result.history) == 3
    assert seen[0] is None  # the first epoch: random batches
    for groups in seen[1:]:
        assert sorted(i for g in groups for i in g) == list(range(12)) and {len(g) for g in groups} == {2}
    batches = list(real(_samples(12), 4, 0, 1, torch.device("cpu"), seen[1]))
    assert len(batches) == 3 and all(len(b[0]) == 4 for b in batches)  # 2 groups per batch of 4


def test_a_corrupt_encoder_is_one_line_naming_it_and_the_stage_to_run_again(tiny_bundle, tmp_path):
    path = tmp_path / "encoder.pt"
    shutil.copyfile(BundleDir(tiny_bundle).encoder, path)
    assert load_encoder(path).text_proj.out_features == 16
    truncate(path)
    with pytest.raises(CorruptOutput) as err:
        load_encoder(path)
    assert str(err.value) == (f"{path} is corrupt (torch.load fails on its {path.stat().st_size} bytes: "
                              "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central "
                              "directory): run the pretrain stage again (--refresh pretrain)")
    with pytest.raises(CorruptOutput, match=r"\)$"):  # a bundle's file: no stage to name
        load_encoder(path, stage=None)


# pretrain.augment: random resized crops and caption-aware flips

SIDES = ("a circle on the left", "a square at the top right", "一个圆形在左侧")


def _sided_samples(n: int) -> SampleSet:
    """Samples whose captions (text and token ids) name a side for every third sample."""
    data = _samples(n)
    captions = [[{"lang": "en", "text": SIDES[i // 3 % 3] if i % 3 == 0 else f"shape number {i}"}] for i in range(n)]
    return SampleSet(data.sample_ids, data.splits, data.images, captions, data.caption_ids, data.qa, data.question_ids)


def test_augmented_batches_never_mirror_an_image_whose_caption_names_a_side():
    from mmcore.data.augment import flippable
    from mmcore.training.contrastive import Augment, _pair_batches

    data = _sided_samples(24)
    augment = Augment((1.0, 1.0), flippable(data.captions))  # full crops: an image is itself or its mirror
    mirrored_ok = 0
    for epoch in range(4):
        plain = list(_pair_batches(data, 8, 0, epoch, CPU))
        for (images, texts), (originals, plain_texts) in zip(_pair_batches(data, 8, 0, epoch, CPU, augment=augment),
                                                             plain, strict=True):
            assert torch.equal(texts, plain_texts)  # the same caption picks with augmentation or without
            for image, original in zip(images, originals, strict=True):
                i = next(j for j in range(len(data)) if torch.equal(torch.from_numpy(data.images[j]), original))
                if not torch.equal(image, original):
                    assert torch.equal(image, original.flip(-1)) and i % 3, f"sample {i} ({data.captions[i]}) mirrored"
                    mirrored_ok += 1
    assert mirrored_ok > 10  # the others are flipped, about half the time


def test_augmented_pretraining_resumes_bit_for_bit(tmp_path, monkeypatch):
    from mmcore.training import contrastive

    calls = []
    real = contrastive.augment_batch
    monkeypatch.setattr(contrastive, "augment_batch", lambda *a: calls.append(len(a[0])) or real(*a))
    cfg = CFG.model_copy(update={"augment": True, "crop_scale": (0.5, 1.0)})
    args = (_sided_samples(12), _sided_samples(4), ENC, cfg, 20)
    full, _ = pretrain(*args, PretrainDir(tmp_path / "full"), CPU, resume_key="a")
    assert calls == [4] * 6  # every training batch of both epochs is augmented

    def stop(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt  # a kill right after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        pretrain(*args, PretrainDir(tmp_path / "cut"), CPU, resume_key="a", on_epoch=stop)
    resumed, result = pretrain(*args, PretrainDir(tmp_path / "cut"), CPU, resume_key="a")
    assert result.resumed_from == 1
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))


def test_every_rank_gets_batches_of_the_same_sizes_from_uneven_groups(monkeypatch):
    """Gathering negatives across ranks needs equal shapes: a rank whose groups hold fewer images repeats
    its first ones."""
    from mmcore.training import contrastive, distributed

    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # the last group is short
    sizes = {}
    for rank in range(2):
        monkeypatch.setattr(distributed, "world", lambda: 2)
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        sizes[rank] = [len(images) for images, _ in contrastive._pair_batches(_samples(10), 4, 0, 0, CPU, groups)]
    assert sizes[0] == sizes[1] == [2, 2, 2]  # 6 images each: rank 1's groups [3,4,5], [9] repeat image 3
