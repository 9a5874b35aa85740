"""Caption metrics as coco-caption (pycocoevalcap 1.2) computes them: BLEU-1..4, CIDEr-D and ROUGE-L on
the tokens of its PTB tokenizer (see `ptb`), and distinct-n.

Ports of `bleu/bleu_scorer.py`, `cider/cider_scorer.py` and `rouge/rouge.py`, step for step, so values
compare with papers; tests check them against pycocoevalcap itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from mmcore.metrics.ptb import ptb_tokens

_NOT_WORD = re.compile(r"[^\w\s]")


def check_pairs(hyps: list[str], refs: list[list[str]]) -> None:
    if len(hyps) != len(refs) or not hyps or not all(refs):
        raise ValueError(f"need one non-empty reference list per hypothesis, got {len(hyps)} hypotheses and "
                         f"{len(refs)} reference lists")


def caption_tokens(text: str, lang: str = "en") -> list[str]:
    """Tokens the caption metrics compare: coco-caption's PTB tokens (lower case, clitics split, punctuation
    removed); Chinese is one token per character, punctuation removed."""
    if lang.startswith("zh"):
        return [ch for ch in _NOT_WORD.sub(" ", text.lower()) if not ch.isspace()]
    return ptb_tokens(text)


def _ngrams(tokens: list[str], n_max: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1))


def caption_bleu(hyps: list[str], refs: list[list[str]], lang: str = "en", order: int = 4) -> list[float]:
    """Corpus BLEU-1..`order` (0-100) as coco-caption's `Bleu(4)`: clipped n-gram counts summed over the
    corpus, the closest reference length (the shorter on a tie) for the brevity penalty, and its smoothing
    of (matches + 1e-15) / (guesses + 1e-9) at every order, so BLEU-n is the same whatever `order` is."""
    check_pairs(hyps, refs)
    tiny, small = 1e-15, 1e-9  # bleu_scorer.compute_score
    correct, guess = [0] * order, [0] * order
    test_len = ref_len = 0
    for h, rs in zip(hyps, refs, strict=True):
        ht = caption_tokens(h, lang)
        rts = [caption_tokens(r, lang) for r in rs]
        max_counts: Counter = Counter()
        for rt in rts:
            max_counts |= _ngrams(rt, order)  # per n-gram, the most any one reference has
        for gram, count in _ngrams(ht, order).items():
            correct[len(gram) - 1] += min(max_counts[gram], count)
        for k in range(order):
            guess[k] += max(0, len(ht) - k)
        test_len += len(ht)
        ref_len += min((abs(len(rt) - len(ht)), len(rt)) for rt in rts)[1]
    scores, product = [], 1.0
    for k in range(order):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [100.0 * s * penalty for s in scores]


def cider_d(hyps: list[str], refs: list[list[str]], lang: str = "en", sigma: float = 6.0) -> float:
    """CIDEr-D as coco-caption's `Cider` computes it (x10 scale, as papers report it).

    Per n = 1..4: TF-IDF vectors of n-grams, with document frequencies over the reference sets;
    the hypothesis' weights are clipped at the reference's, scaled by a Gaussian length penalty
    (sigma 6), and the cosine is averaged over n and over references. The corpus score is the mean over
    hypotheses. Like coco-caption, "length" is the bigram count.
    """
    check_pairs(hyps, refs)
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
                total[n] += val * np.e ** (-((lh - lr) ** 2) / (2 * sigma**2))
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
    """ROUGE-L as coco-caption's `Rouge` computes it: LCS-based F-measure (beta 1.2) with the best precision
    and recall over the references, averaged over hypotheses; 0-1."""
    check_pairs(hyps, refs)
    scores = []
    for h, rs in zip(hyps, refs, strict=True):
        # coco-caption splits the joined tokens on " ": an empty caption is one empty token, not none
        ht = caption_tokens(h, lang) or [""]
        prec, rec = [], []
        for r in rs:
            rt = caption_tokens(r, lang) or [""]
            lcs = _lcs(rt, ht)
            prec.append(lcs / len(ht))
            rec.append(lcs / len(rt))
        p, r = max(prec), max(rec)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0)
    return float(np.mean(scores))


def distinct_n(texts: list[str], n: int, lang: str = "en") -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the generated texts; 0-1."""
    grams = [g for t in texts for g in zip(*(caption_tokens(t, lang)[i:] for i in range(n)), strict=False)]
    return len(set(grams)) / len(grams) if grams else 0.0
