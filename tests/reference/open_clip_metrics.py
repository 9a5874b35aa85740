"""OpenCLIP's retrieval metrics, `get_clip_metrics` copied verbatim (MIT License, Copyright (c) 2012-2021
Gabriel Ilharco, Mitchell Wortsman, et al.) from
https://github.com/mlfoundations/open_clip/blob/0b0776064384212ea150107b825b50a09589c39d/src/open_clip_train/train.py
(the last version before the chunked rewrite in src/open_clip_train/metrics.py, which ranks the same, and
breaks ties by index). One text per image: text i is image i's. Test code only.
"""
# ruff: noqa

import numpy as np
import torch


def get_clip_metrics(image_features, text_features, logit_scale, image_key="image", text_key="text"):
    metrics = {}
    logits_per_image = (logit_scale * image_features @ text_features.t()).detach().cpu()
    logits_per_text = logits_per_image.t().detach().cpu()

    logits = {f"{image_key}_to_{text_key}": logits_per_image, f"{text_key}_to_{image_key}": logits_per_text}
    ground_truth = torch.arange(len(text_features)).view(-1, 1)

    for name, logit in logits.items():
        ranking = torch.argsort(logit, descending=True)
        preds = torch.where(ranking == ground_truth)[1]
        preds = preds.detach().cpu().numpy()
        metrics[f"{name}_mean_rank"] = preds.mean() + 1
        metrics[f"{name}_median_rank"] = np.floor(np.median(preds)) + 1
        for k in [1, 5, 10]:
            metrics[f"{name}_R@{k}"] = np.mean(preds < k)

    return metrics
