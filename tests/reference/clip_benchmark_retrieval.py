"""CLIP_benchmark's retrieval recall, copied verbatim (MIT License, Copyright (c) 2022, Mehdi Cherti) from
https://github.com/LAION-AI/CLIP_benchmark/blob/48de38c1689fa6d8b4dd53e3370c669c3bb18117/clip_benchmark/metrics/zeroshot_retrieval.py
(`recall_at_k` and `batchify`); `clip_benchmark_recalls` repeats the two metric lines of that file's
`evaluate` on given scores. Test code only: the reference `mmcore.metrics.retrieval` is checked against.
"""
# ruff: noqa

import torch


def clip_benchmark_recalls(scores, positive_pairs, recall_k_list, batch_size=64, device="cpu"):
    """scores (nb texts, nb images), positive_pairs the same shape, bool; as in `evaluate`."""
    metrics = {}
    for recall_k in recall_k_list:
        metrics[f"image_retrieval_recall@{recall_k}"] = (batchify(recall_at_k, scores, positive_pairs, batch_size, device, k=recall_k)>0).float().mean().item()
        metrics[f"text_retrieval_recall@{recall_k}"] = (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, device, k=recall_k)>0).float().mean().item()
    return metrics


# ---- verbatim from clip_benchmark/metrics/zeroshot_retrieval.py below ----

def recall_at_k(scores, positive_pairs, k):
    """
    Compute the recall at k for each sample
    :param scores: compability score between  text and image embeddings (nb texts, nb images)
    :param k: number of images to consider per text, for retrieval
    :param positive_pairs: boolean matrix of positive pairs (nb texts, nb images)
    :return: recall at k averaged over all texts
    """
    nb_texts, nb_images = scores.shape
    # for each text, sort according to image scores in decreasing order
    topk_indices = torch.topk(scores, k, dim=1)[1]
    # compute number of positives for each text
    nb_positive = positive_pairs.sum(dim=1)
    # nb_texts, k, nb_images
    topk_indices_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
    # compute number of true positives
    positive_pairs_reshaped = positive_pairs.view(nb_texts, 1, nb_images)
    # a true positive means a positive among the topk
    nb_true_positive = (topk_indices_onehot * positive_pairs_reshaped).sum(dim=(1,2))
    # compute recall at k
    recall_at_k = (nb_true_positive / nb_positive)
    return recall_at_k

def batchify(func, X, Y, batch_size, device, *args, **kwargs):
    results = []
    for start in range(0, len(X), batch_size):
        end = start + batch_size
        x = X[start:end].to(device)
        y = Y[start:end].to(device)
        result = func(x, y, *args, **kwargs).cpu()
        results.append(result)
    return torch.cat(results)
