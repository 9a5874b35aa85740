"""Text-image retrieval: recall@k and ranks in both directions, each beside what a random ranking gets.

Conventions of OpenCLIP's `get_clip_metrics` and CLIP_benchmark's `recall_at_k`: a hit at k is the true
item (for image-to-text, any of the image's texts) among the top k; ranks count from 1. Ties, which those
leave to the sort, count against the query here: the rank of the true item is the number of competitors
scoring at least as high, so collapsed (all-equal) embeddings score below chance, never 1.0.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4096  # rows of the similarity matrix compared at a time: bounds the temporaries


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                      ks: tuple[int, ...] = (1, 5, 10), text_keys: np.ndarray | None = None) -> dict[str, float]:
    """Recall@k in both directions, with the value a random ranking would get as `<name>_baseline`.

    image_emb (N, D) and text_emb (M, D) are unit vectors; text_image (M,) gives each text's image.
    Image-to-text counts a hit when any of the image's texts is in the top k; images without texts
    are left out of it (they can still be retrieved by other texts' t2i queries). Non-finite embeddings
    raise ValueError.

    `text_keys` (M,), when given, says which texts are the same caption (equal keys, e.g. the normalised
    string): for image-to-text, another image's text that is the same caption as one of this image's is
    a hit too, not a competitor. Data where several images share a caption ("a red circle") would
    otherwise rank an image's own caption behind its exact duplicates, tied with it. Without keys, or
    with unique captions (COCO, Flickr30k), this is the plain protocol.
    """
    _check_finite(image_emb, "image embeddings")
    _check_finite(text_emb, "text embeddings")
    n, m = len(image_emb), len(text_emb)
    text_image = np.asarray(text_image)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        sim = image_emb @ text_emb.T  # (N, M)
    _check_finite(sim, "their similarities (an overflow)")
    keys = np.arange(m) if text_keys is None else np.unique(np.asarray(text_keys), return_inverse=True)[1]
    t2i_rank, i2t_rank, per_image = _ranks(sim, text_image, keys.reshape(-1))
    has_text = per_image > 0
    i2t_rank = i2t_rank[has_text]
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
        out[f"i2t_r{k}_baseline"] = float(np.mean([_hit_by_chance(m, c, k) for c in per_image[has_text]]))
        out[f"t2i_r{k}_baseline"] = min(k, n) / n
    out["t2i_median_rank"] = float(np.median(t2i_rank) + 1)
    out["i2t_median_rank"] = float(np.median(i2t_rank) + 1)
    out["t2i_mean_rank"] = float(np.mean(t2i_rank) + 1)
    out["i2t_mean_rank"] = float(np.mean(i2t_rank) + 1)
    # a random order puts the true item at rank (total + 1) / 2 on average
    out["t2i_mean_rank_baseline"] = (n + 1) / 2
    out["i2t_mean_rank_baseline"] = float(np.mean([(m + 1) / (c + 1) for c in per_image[has_text]]))
    return out


def _ranks(sim: np.ndarray, text_image: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based ranks: of each text's image among the images (M,), and of each image's best-ranked relevant
    text among the texts (N,; meaningless for images without texts); and each image's relevant texts (N,).
    A relevant text is one of the image's own or the same caption (`keys`) as one of them. A competitor
    scoring the same counts as better."""
    n, m = sim.shape
    true = sim[text_image, np.arange(m)]  # (M,) each text's score with its own image
    best = np.full(n, -np.inf, dtype=sim.dtype)
    np.maximum.at(best, text_image, true)  # (N,) each image's best score with one of its texts
    owns = np.zeros((n, int(keys.max()) + 1 if m else 0), dtype=bool)
    owns[text_image, keys] = True  # (N, captions) the captions each image has
    t2i = np.empty(m, dtype=np.int64)
    for s in range(0, m, _CHUNK):
        t2i[s : s + _CHUNK] = (sim[:, s : s + _CHUNK] >= true[s : s + _CHUNK]).sum(axis=0) - 1  # minus itself
    i2t, relevant = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        hits = owns[s : s + _CHUNK][:, keys]  # (chunk, M) the texts that count as hits for these images
        i2t[s : s + _CHUNK] = ((sim[s : s + _CHUNK] >= best[s : s + _CHUNK, None]) & ~hits).sum(axis=1)
        relevant[s : s + _CHUNK] = hits.sum(axis=1)
    return t2i, i2t, relevant


def retrieval_metrics_folds(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                            ks: tuple[int, ...] = (1, 5, 10), fold: int = 1000,
                            folds: int = 5, text_keys: np.ndarray | None = None) -> dict[str, float]:
    """COCO's 1K protocol: `retrieval_metrics` within each of `folds` consecutive blocks of `fold` images
    (with their texts), averaged; the images after the first folds * fold are left out. `text_keys` as in
    `retrieval_metrics`."""
    if len(image_emb) < fold * folds:
        raise ValueError(f"{folds} folds of {fold} images need {fold * folds} images, got {len(image_emb)}")
    text_image = np.asarray(text_image)
    found = []
    for f in range(folds):
        texts = np.flatnonzero((text_image >= f * fold) & (text_image < (f + 1) * fold))
        found.append(retrieval_metrics(image_emb[f * fold : (f + 1) * fold], text_emb[texts],
                                       text_image[texts] - f * fold, ks,
                                       None if text_keys is None else np.asarray(text_keys)[texts]))
    return {k: float(np.mean([m[k] for m in found])) for k in found[0]}


def with_suffix(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    """`suffix` after each metric's name, before `_baseline`: t2i_r1_baseline -> t2i_r1<suffix>_baseline."""
    tail = "_baseline"
    return {(k[: -len(tail)] + suffix + tail if k.endswith(tail) else k + suffix): v for k, v in metrics.items()}


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise ValueError(f"retrieval: {what} hold {bad} non-finite values (NaN or inf); the encoder diverged or "
                         "was fed bad inputs")


def _hit_by_chance(total: int, relevant: int, k: int) -> float:
    """P(at least one of `relevant` items is in the top k of a random order of `total`)."""
    miss = 1.0
    for i in range(min(k, total)):
        miss *= max(0.0, (total - relevant - i) / (total - i))
    return 1.0 - miss
