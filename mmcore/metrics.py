"""Evaluation metrics, each with the chance or trivial baseline it should be read against."""

from __future__ import annotations

import re
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
    out["t2i_mean_rank"] = float(np.mean(t2i_rank) + 1)
    out["i2t_mean_rank"] = float(np.mean(i2t_rank[has_text]) + 1)
    # a random order puts the true item at rank (total + 1) / 2 on average
    out["t2i_mean_rank_baseline"] = (n + 1) / 2
    out["i2t_mean_rank_baseline"] = float(np.mean([(m + 1) / (c + 1) for c in per_image[has_text]]))
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


def _check(hyps: list[str], refs: list[list[str]]) -> None:
    if len(hyps) != len(refs) or not hyps or not all(refs):
        raise ValueError(f"need one non-empty reference list per hypothesis, got {len(hyps)} hypotheses and "
                         f"{len(refs)} reference lists")


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu takes reference streams; a hypothesis with fewer references gets None in the rest."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(width)]


def _sacre_tokenize(lang: str) -> str:
    return "zh" if lang.startswith("zh") else "13a"


def bleu(hyps: list[str], refs: list[list[str]], lang: str = "en", order: int = 4) -> float:
    """Corpus BLEU-`order` (sacrebleu, 0-100): the usual cumulative BLEU-1..4 of captioning papers.

    Chinese is scored with sacrebleu's "zh" tokenization (one token per character).
    """
    _check(hyps, refs)
    scorer = sacrebleu.BLEU(tokenize=_sacre_tokenize(lang), max_ngram_order=order,
                            effective_order=order < 4)
    return float(scorer.corpus_score(hyps, _streams(refs)).score)


def chrf(hyps: list[str], refs: list[list[str]]) -> float:
    """Corpus chrF (sacrebleu, 0-100): character n-gram F-score, meaningful for Chinese as it is."""
    _check(hyps, refs)
    return float(sacrebleu.corpus_chrf(hyps, _streams(refs)).score)


_PUNCT = re.compile(r"[^\w\s]")


def caption_tokens(text: str, lang: str = "en") -> list[str]:
    """Tokens for CIDEr-D and ROUGE-L: lower case, punctuation removed (as coco-caption's PTB tokenizer
    does); Chinese is split into characters."""
    text = _PUNCT.sub(" ", text.lower())
    if lang.startswith("zh"):
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def _ngrams(tokens: list[str], n_max: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1))


def cider_d(hyps: list[str], refs: list[list[str]], lang: str = "en", sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015) as coco-caption computes it, so values compare with papers (x10 scale).

    Per n = 1..4: TF-IDF vectors of n-grams, with document frequencies over the reference sets;
    the hypothesis' weights are clipped at the reference's, scaled by a Gaussian length penalty
    (sigma 6), and the cosine is averaged over n and over references. The corpus score is the mean over
    hypotheses. Like coco-caption, "length" is the bigram count.
    """
    _check(hyps, refs)
    n_max = 4
    hyp_grams = [_ngrams(caption_tokens(h, lang), n_max) for h in hyps]
    ref_grams = [[_ngrams(caption_tokens(r, lang), n_max) for r in rs] for rs in refs]
    doc_freq: Counter = Counter()
    for rs in ref_grams:
        doc_freq.update({g for r in rs for g in r})
    log_docs = np.log(float(len(refs)))

    def vector(grams: Counter) -> tuple[list[dict], np.ndarray, int]:
        vec: list[dict] = [{} for _ in range(n_max)]
        norm = np.zeros(n_max)
        for gram, tf in grams.items():
            n = len(gram) - 1
            vec[n][gram] = tf * (log_docs - np.log(max(1.0, doc_freq[gram])))
            norm[n] += vec[n][gram] ** 2
        return vec, np.sqrt(norm), sum(tf for g, tf in grams.items() if len(g) == 2)

    scores = []
    for h, rs in zip(hyp_grams, ref_grams, strict=True):
        vh, nh, lh = vector(h)
        total = np.zeros(n_max)
        for r in rs:
            vr, nr, lr = vector(r)
            for n in range(n_max):
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] and nr[n]:
                    val /= nh[n] * nr[n]
                total[n] += val * np.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        scores.append(total.mean() / len(rs) * 10.0)
    return float(np.mean(scores))


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hyps: list[str], refs: list[list[str]], lang: str = "en", beta: float = 1.2) -> float:
    """ROUGE-L as coco-caption computes it: LCS-based F-measure (beta 1.2) with the best precision and
    recall over the references, averaged over hypotheses; 0-1."""
    _check(hyps, refs)
    scores = []
    for h, rs in zip(hyps, refs, strict=True):
        ht = caption_tokens(h, lang)
        prec, rec = [], []
        for r in rs:
            rt = caption_tokens(r, lang)
            lcs = _lcs(rt, ht)
            prec.append(lcs / len(ht) if ht else 0.0)
            rec.append(lcs / len(rt) if rt else 0.0)
        p, r = max(prec), max(rec)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0)
    return float(np.mean(scores))


def distinct_n(texts: list[str], n: int, lang: str = "en") -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the generated texts; 0-1."""
    grams = [g for t in texts for g in zip(*(caption_tokens(t, lang)[i:] for i in range(n)), strict=False)]
    return len(set(grams)) / len(grams) if grams else 0.0
