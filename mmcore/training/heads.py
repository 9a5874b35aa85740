"""Training the task heads (VQA classifier, caption decoder) on frozen features."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from mmcore.config import HeadsConfig
from mmcore.features import FeatureSet
from mmcore.io import save_torch
from mmcore.losses import classification_loss, sequence_loss
from mmcore.models.heads import CaptionDecoder, VQAHead
from mmcore.training.loop import EpochCallback, epoch_order, fit, pad_batch, seed_everything, stage_fit_config

HEADS_FILE = "heads.pt"


@dataclass
class Heads:
    """Trained heads plus what is needed to use them: the answer vocabulary and the caption language."""

    vqa: VQAHead | None
    answers: list[str]
    captioner: CaptionDecoder | None
    caption_lang: str
    dims: dict[str, int]


def _dims(data: FeatureSet, vocab_size: int, cfg: HeadsConfig) -> dict[str, int]:
    return {"vocab_size": vocab_size, "grid_dim": data.grid.shape[1], "pooled_dim": data.pooled.shape[1],
            "cells": data.grid.shape[2],
            "hidden": cfg.hidden, "word_dim": cfg.word_dim}


def build_vqa(d: dict[str, int], n_answers: int) -> VQAHead:
    return VQAHead(d["vocab_size"], d["grid_dim"], d["pooled_dim"], d["cells"], n_answers, d["word_dim"], d["hidden"])


def build_captioner(d: dict[str, int]) -> CaptionDecoder:
    return CaptionDecoder(d["vocab_size"], d["grid_dim"], d["pooled_dim"], d["cells"], d["word_dim"], d["hidden"])


def _image_batch(data: FeatureSet, idx: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.grid[idx]).to(device), torch.from_numpy(data.pooled[idx]).to(device)


def qa_pairs(data: FeatureSet, answer_index: dict[str, int]) -> list[tuple[int, list[int], int]]:
    """(sample, question ids, answer class) for every question; unknown answers get class -1."""
    return [(i, ids, answer_index.get(qa["answer"], -1))
            for i, (qas, qids) in enumerate(zip(data.qa, data.question_ids, strict=True))
            for qa, ids in zip(qas, qids, strict=True)]


def train_vqa(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
              on_epoch: EpochCallback | None = None) -> tuple[VQAHead, list[str]]:
    """Answer classifier over the training answers (most frequent first)."""
    seed_everything(cfg.seed)
    answers = [a for a, _ in Counter(qa["answer"] for qas in train.qa for qa in qas).most_common()]
    if not answers:
        raise ValueError("no questions in the train split: cannot train the VQA head")
    index = {a: i for i, a in enumerate(answers)}
    pairs, val_pairs = qa_pairs(train, index), qa_pairs(val, index)
    d = _dims(train, vocab_size, cfg)
    model = build_vqa(d, len(answers)).to(device)

    def batches(epoch: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(pairs), cfg.seed, epoch).tolist()
        for s in range(0, len(order), cfg.batch_size):
            chunk = [pairs[j] for j in order[s : s + cfg.batch_size]]
            yield ([p[0] for p in chunk], pad_batch([p[1] for p in chunk]).to(device),
                   torch.tensor([p[2] for p in chunk], device=device))

    def step(batch: tuple[list[int], torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx, q, y = batch
        return classification_loss(model(*_image_batch(train, idx, device), q), y)

    def validate() -> dict[str, float]:
        if not val_pairs:
            return {}
        pred = predict_answers(model, val, [p[0] for p in val_pairs], [p[1] for p in val_pairs], device)
        return {"val_vqa_acc": float((pred == torch.tensor([p[2] for p in val_pairs])).float().mean())}

    steps = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
    fit(model, stage_fit_config(cfg, steps, "val_vqa_acc", "max", bool(val_pairs)), batches, step, validate,
        on_epoch=on_epoch)
    return model, answers


@torch.no_grad()
def predict_answers(model: VQAHead, data: FeatureSet, idx: list[int], question_ids: list[list[int]],
                    device: torch.device, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        grid, pooled = _image_batch(data, idx[s : s + batch_size], device)
        out.append(model(grid, pooled, pad_batch(question_ids[s : s + batch_size]).to(device)).argmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def caption_pairs(data: FeatureSet, lang: str) -> list[tuple[int, list[int]]]:
    return [(i, ids) for i, (caps, cids) in enumerate(zip(data.captions, data.caption_ids, strict=True))
            for cap, ids in zip(caps, cids, strict=True) if cap["lang"] == lang]


def train_captioner(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
                    on_epoch: EpochCallback | None = None) -> CaptionDecoder:
    """Teacher-forced caption decoder on the training captions of cfg.caption_lang."""
    seed_everything(cfg.seed)
    pairs, val_pairs = caption_pairs(train, cfg.caption_lang), caption_pairs(val, cfg.caption_lang)
    if not pairs:
        langs = sorted({c["lang"] for caps in train.captions for c in caps})
        raise ValueError(f"no training captions in language {cfg.caption_lang!r}; the data has {langs}")
    d = _dims(train, vocab_size, cfg)
    model = build_captioner(d).to(device)

    def loss(data: FeatureSet, chunk: list[tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
        ids = pad_batch([p[1] for p in chunk]).to(device)  # (B, T): [BOS] w1 .. wn [EOS] pad
        logits = model(*_image_batch(data, [p[0] for p in chunk], device), ids[:, :-1])
        return sequence_loss(logits, ids[:, 1:])

    def batches(epoch: int) -> Iterator[list[tuple[int, list[int]]]]:
        order = epoch_order(len(pairs), cfg.seed, epoch).tolist()
        for s in range(0, len(order), cfg.batch_size):
            yield [pairs[j] for j in order[s : s + cfg.batch_size]]

    def validate() -> dict[str, float]:
        if not val_pairs:
            return {}
        terms = [float(loss(val, val_pairs[s : s + 512])["loss"]) for s in range(0, len(val_pairs), 512)]
        return {"val_caption_loss": sum(terms) / len(terms)}

    steps = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
    fit(model, stage_fit_config(cfg, steps, "val_caption_loss", "min", bool(val_pairs)), batches,
        lambda b: loss(train, b), validate, on_epoch=on_epoch)
    return model


def save_heads(heads: Heads, path: str | Path) -> Path:
    state = {
        "vqa": heads.vqa.state_dict() if heads.vqa else {},
        "answers": heads.answers,
        "captioner": heads.captioner.state_dict() if heads.captioner else {},
        "caption_lang": heads.caption_lang,
        "dims": heads.dims,
    }
    save_torch(state, path)
    return Path(path)


def load_heads(path: str | Path, device: torch.device | str = "cpu") -> Heads:
    state = torch.load(path, map_location="cpu", weights_only=True)
    d = state["dims"]
    vqa = cap = None
    if state["vqa"]:
        vqa = build_vqa(d, len(state["answers"]))
        vqa.load_state_dict(state["vqa"])
        vqa = vqa.to(device).eval()
    if state["captioner"]:
        cap = build_captioner(d)
        cap.load_state_dict(state["captioner"])
        cap = cap.to(device).eval()
    return Heads(vqa, list(state["answers"]), cap, state["caption_lang"], dict(d))


def build_heads(vqa: VQAHead, answers: list[str], captioner: CaptionDecoder, train: FeatureSet,
                vocab_size: int, cfg: HeadsConfig) -> Heads:
    return Heads(vqa, answers, captioner, cfg.caption_lang, _dims(train, vocab_size, cfg))
