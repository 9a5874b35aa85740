"""Training the task heads (VQA classifier, caption decoder) on frozen features."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from mmcore import integrity
from mmcore.config import HeadsConfig
from mmcore.features import FeatureSet
from mmcore.io import save_torch
from mmcore.losses import classification_loss, sequence_loss, soft_score_loss
from mmcore.models.builders import (
    HeadDims,
    build_blind_vqa,
    build_captioner,
    build_generator,
    build_translator,
    build_vqa,
)
from mmcore.models.heads import BLIND_INPUTS, BlindVQA, CaptionDecoder, VQAHead
from mmcore.models.text_heads import TextGenerator, Translator
from mmcore.training.answers import answer_vocabulary, dense_scores, soft_targets
from mmcore.training.loop import EpochCallback, epoch_order, fit, pad_batch, seed_everything, stage_fit_config
from mmcore.training.text_heads import head_dims, parallel_pairs, train_generator, train_translator

VQABuilder = Callable[[HeadDims, int], nn.Module]  # (dims, number of answers) -> a VQA model


@dataclass
class Heads:
    """Trained heads plus what is needed to use them: the answer vocabulary and the caption language.

    `vqa_blind` holds the baselines that see one input only (by what they see: "question" or "image");
    evaluation reads the VQA head's accuracy against theirs.
    """

    vqa: VQAHead | None
    answers: list[str]
    captioner: CaptionDecoder | None
    caption_lang: str
    dims: HeadDims
    vqa_blind: dict[str, BlindVQA] = field(default_factory=dict)
    translator: Translator | None = None
    generator: TextGenerator | None = None
    text_langs: list[str] = field(default_factory=list)  # language index of the translator and generator


def _image_batch(data: FeatureSet, idx: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.grid[idx]).to(device), torch.from_numpy(data.pooled[idx]).to(device)


def _vqa_batch(data: FeatureSet, idx: list[int], questions: list[list[int]],
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grid (B, G, cells), pooled (B, C) and padded question ids (B, T) of a batch."""
    return (*_image_batch(data, idx, device), pad_batch(questions).to(device))


def qa_pairs(data: FeatureSet, answer_index: dict[str, int]) -> list[tuple[int, list[int], int]]:
    """(sample, question ids, answer class) for every question; unknown answers get class -1."""
    return [(i, ids, answer_index.get(qa["answer"], -1))
            for i, (qas, qids) in enumerate(zip(data.qa, data.question_ids, strict=True))
            for qa, ids in zip(qas, qids, strict=True)]


def train_vqa(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
              on_epoch: EpochCallback | None = None, build: VQABuilder = build_vqa) -> tuple[nn.Module, list[str]]:
    """Answer classifier over the training answers (`answer_vocabulary`). Where training questions have several
    human answers (VQA v2), every question trains on its soft scores with binary cross-entropy (`soft_targets`;
    one answer scores 1); where each has one, on that answer with cross-entropy. `val_vqa_acc` is the official
    VQA accuracy (exact match for one answer).

    `build` makes the model from the dims and the number of answers: `build_vqa` by default, a blind
    baseline with `partial(build_blind_vqa, sees=...)`.
    """
    seed_everything(cfg.seed)
    answers = answer_vocabulary(train.qa)
    if not answers:
        raise ValueError("no questions in the train split: cannot train the VQA head")
    index = {a: i for i, a in enumerate(answers)}
    pairs, val_pairs = qa_pairs(train, index), qa_pairs(val, index)
    targets = soft_targets(train.qa, answers)
    val_targets = soft_targets(val.qa, answers) if targets is not None else None
    model = build(head_dims(train, vocab_size, cfg), len(answers)).to(device)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(pairs), cfg.seed, epoch).tolist()
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            chunk = [pairs[j] for j in rows]
            x = _vqa_batch(train, [p[0] for p in chunk], [p[1] for p in chunk], device)
            if targets is None:  # (B,) answer classes
                yield (*x, torch.tensor([p[2] for p in chunk], device=device))
            else:  # (B, A) soft scores
                yield (*x, dense_scores([targets[j] for j in rows], len(answers)).to(device))

    def step(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        *x, y = batch
        return classification_loss(model(*x), y) if targets is None else soft_score_loss(model(*x), y)

    def validate() -> dict[str, float]:
        if not val_pairs:
            return {}
        pred = predict_answers(model, val, [p[0] for p in val_pairs], [p[1] for p in val_pairs], device)
        if val_targets is None:
            return {"val_vqa_acc": float((pred == torch.tensor([p[2] for p in val_pairs])).float().mean())}
        scores = [t.get(c, 0.0) for t, c in zip(val_targets, pred.tolist(), strict=True)]
        return {"val_vqa_acc": sum(scores) / len(scores)}

    steps = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
    fit(model, stage_fit_config(cfg, steps, "val_vqa_acc", "max", bool(val_pairs)), batches, step, validate,
        on_epoch=on_epoch)
    return model, answers


@torch.no_grad()
def predict_answers(model: nn.Module, data: FeatureSet, idx: list[int], question_ids: list[list[int]],
                    device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Answer class of each (image `idx[i]`, question `question_ids[i]`) by any VQA model."""
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        x = _vqa_batch(data, idx[s : s + batch_size], question_ids[s : s + batch_size], device)
        out.append(model(*x).argmax(-1).cpu())
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
    model = build_captioner(head_dims(train, vocab_size, cfg)).to(device)

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


def train_heads(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
                on_epoch: Callable[[str], EpochCallback | None] = lambda name: None) -> tuple[Heads, dict[str, str]]:
    """Trains every head the training data supports; returns the heads and, per head left out, why.

    `on_epoch(name)` gives the epoch callback of head `name` (vqa, vqa_question_only, vqa_image_only, caption,
    translation, generation).
    """
    skipped: dict[str, str] = {}
    vqa, answers, blind = None, [], {}
    if any(q for qs in train.question_ids for q in qs):
        vqa, answers = train_vqa(train, val, cfg, vocab_size, device, on_epoch("vqa"),
                                 partial(build_vqa, film=cfg.film))
        if cfg.vqa_baselines:
            blind_cfg = cfg.model_copy(update={"epochs": cfg.vqa_baseline_epochs or cfg.epochs})
            for sees in BLIND_INPUTS:
                blind[sees], _ = train_vqa(train, val, blind_cfg, vocab_size, device, on_epoch(f"vqa_{sees}_only"),
                                           partial(build_blind_vqa, sees=sees, film=cfg.film))
    else:
        skipped["vqa"] = "the training split has no questions"
    captioner = None
    if caption_pairs(train, cfg.caption_lang):
        captioner = train_captioner(train, val, cfg, vocab_size, device, on_epoch("caption"))
    else:
        skipped["caption"] = f"the training split has no captions in heads.caption_lang={cfg.caption_lang!r}"
    heads = Heads(vqa, answers, captioner, cfg.caption_lang, head_dims(train, vocab_size, cfg), blind)
    _train_text_heads(heads, train, val, cfg, vocab_size, device, on_epoch, skipped)
    return heads, skipped


def _train_text_heads(heads: Heads, train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int,
                      device: torch.device, on_epoch: Callable[[str], EpochCallback | None],
                      skipped: dict[str, str]) -> None:
    """The caption-only heads: a translator between the caption languages and a text generator."""
    langs = sorted({c["lang"] for caps in train.captions for c in caps})
    heads.text_langs = langs
    text_cfg = cfg.model_copy(update={"epochs": cfg.text_epochs, "lr": cfg.text_lr})
    if not cfg.translation:
        skipped["translation"] = "heads.translation is off"
    elif len(langs) < 2 or not any(parallel_pairs(train, a, b) for a in langs for b in langs if a != b):
        skipped["translation"] = f"no parallel captions in two languages (the training split has {langs})"
    else:
        heads.translator = train_translator(train, val, text_cfg, vocab_size, device, langs, on_epoch("translation"))
    if not cfg.generation:
        skipped["generation"] = "heads.generation is off"
    elif not langs:
        skipped["generation"] = "the training split has no captions"
    else:
        heads.generator = train_generator(train, val, text_cfg, vocab_size, device, langs, on_epoch("generation"))


def save_heads(heads: Heads, path: str | Path) -> Path:
    state = {
        "vqa": heads.vqa.state_dict() if heads.vqa else {},
        "vqa_blind": {k: m.state_dict() for k, m in heads.vqa_blind.items()},
        "answers": heads.answers,
        "captioner": heads.captioner.state_dict() if heads.captioner else {},
        "caption_lang": heads.caption_lang,
        "dims": dataclasses.asdict(heads.dims),  # a plain dict: loads with weights_only
        "translator": heads.translator.state_dict() if heads.translator else {},
        "generator": heads.generator.state_dict() if heads.generator else {},
        "text_langs": heads.text_langs,
    }
    save_torch(state, path)
    return Path(path)


def _restore(model: nn.Module, weights: dict[str, torch.Tensor], device: torch.device | str) -> nn.Module:
    model.load_state_dict(weights)
    return model.to(device).eval()


def load_heads(path: str | Path, device: torch.device | str = "cpu", stage: str | None = "train") -> Heads:
    """Rebuilds the heads saved by `save_heads` (tensors and plain containers: loads with weights_only); a
    file that does not load is a one-line `CorruptOutput` naming it and `stage`, the stage that writes it."""
    state = integrity.load_torch(path, stage)
    d, n_answers = HeadDims(**state["dims"]), len(state["answers"])
    film = "film.weight" in state["vqa"]  # heads.film when they were trained (heads saved before FiLM: none)
    vqa = _restore(build_vqa(d, n_answers, film=film), state["vqa"], device) if state["vqa"] else None
    cap = _restore(build_captioner(d), state["captioner"], device) if state["captioner"] else None
    blind = {k: _restore(build_blind_vqa(d, n_answers, k, "head.film.weight" in w), w, device)
             for k, w in state["vqa_blind"].items()}
    langs = list(state["text_langs"])
    translator = _restore(build_translator(d, len(langs)), state["translator"], device) if state["translator"] else None
    generator = _restore(build_generator(d, len(langs)), state["generator"], device) if state["generator"] else None
    return Heads(vqa, list(state["answers"]), cap, state["caption_lang"], d, blind, translator, generator, langs)
