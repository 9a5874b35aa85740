"""Evaluation metrics, each with the chance or trivial baseline it should be read against."""

from __future__ import annotations

from collections import Counter

import numpy as np
import sacrebleu


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions, with the value a random ranking would get as `<name>_baseline`.

    image_emb (N, D) and text_emb (M, D) are unit vectors; text_image (M,) gives each text's image.
    Image-to-text counts a hit when any of the image's texts is in the top k; images without texts
    are left out of it (they can still be retrieved by other texts' t2i queries).
    """
    n, m = len(image_emb), len(text_emb)
    sim = image_emb @ text_emb.T  # (N, M)
    # t2i: rank of the true image for every text (0 = best)
    true_t2i = sim[text_image, np.arange(m)]  # (M,)
    t2i_rank = (sim.T > true_t2i[:, None]).sum(axis=1)
    # i2t: rank of the best-ranked true text for every image
    owns = np.zeros((n, m), dtype=bool)
    owns[text_image, np.arange(m)] = True
    best_true = np.where(owns, sim, -np.inf).max(axis=1)  # (N,)
    i2t_rank = (sim > best_true[:, None]).sum(axis=1)
    per_image = np.bincount(text_image, minlength=n)
    has_text = per_image > 0
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank[has_text] < k).mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
        out[f"i2t_r{k}_baseline"] = float(np.mean([_hit_by_chance(m, c, k) for c in per_image[has_text]]))
        out[f"t2i_r{k}_baseline"] = min(k, n) / n
    out["t2i_median_rank"] = float(np.median(t2i_rank) + 1)
    out["i2t_median_rank"] = float(np.median(i2t_rank[has_text]) + 1)
    return out


def _hit_by_chance(total: int, relevant: int, k: int) -> float:
    """P(at least one of `relevant` items is in the top k of a random order of `total`)."""
    miss = 1.0
    for i in range(min(k, total)):
        miss *= max(0.0, (total - relevant - i) / (total - i))
    return 1.0 - miss


def accuracy(pred: list[str], gold: list[str]) -> float:
    if len(pred) != len(gold) or not gold:
        raise ValueError(f"need equal, non-empty prediction and gold lists, got {len(pred)} and {len(gold)}")
    return float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))


def majority_answer(train_answers: list[str]) -> str:
    if not train_answers:
        raise ValueError("no training answers to take the majority of")
    return Counter(train_answers).most_common(1)[0][0]


def accuracy_by_type(pred: list[str], gold: list[str], types: list[str]) -> dict[str, float]:
    out = {}
    for t in sorted(set(types)):
        idx = [i for i, x in enumerate(types) if x == t]
        out[t] = accuracy([pred[i] for i in idx], [gold[i] for i in idx])
    return out


def bleu(hyps: list[str], refs: list[list[str]], lang: str = "en") -> float:
    """Corpus BLEU-4 (sacrebleu, 0-100) of hypotheses against a varying number of references each."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need one reference list per hypothesis, got {len(hyps)} and {len(refs)}")
    width = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    tokenize = "zh" if lang.startswith("zh") else "13a"
    return float(sacrebleu.corpus_bleu(hyps, streams, tokenize=tokenize).score)
