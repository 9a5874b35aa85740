"""Training step efficiency: the demo's contrastive pretraining against a raw training loop on the same model.

    .venv/bin/python -m bench.train_efficiency --out bench/results/train_efficiency.json
    .venv/bin/python -m bench.train_efficiency --warmup 3 --steps 4 --limit 512 --smoke \
        --out bench/results/train_efficiency-smoke.json                     # a check, about 2 minutes

The demo preset (mobilenet_v3_small at 64 px, GRU text encoder, batch 64) on the demo's synthetic data (3,000
scenes, `bench.stream_memory.prepare`), every measurement in a fresh process with --threads torch threads:
  pretrain  `mmcore.training.contrastive.pretrain`, in memory, for 2 epochs, the time of every batch taken by
            its `on_step` callback. Hard negatives off (random batches), or on: the demo's 4-scene groups,
            from epoch 0 (`hard_from_epoch=0`; the demo starts them at epoch 2), so both epochs use them.
  raw       the same model (same seed and builder) trained on the very batches pretraining's epoch 0 draws
            (`_pair_batches`), made before the clock and already on the device (uint8 images, padded token
            ids): per batch zero_grad, forward, `contrastive_loss`, backward and an AdamW step with the same lr
            and weight decay. No clipping, schedule or loss read-back: those count as the pipeline's.
            `raw` takes the random batches of hard negatives off, `raw-hard` the groups of hard negatives on
            (from the untrained model, as pretraining's epoch 0 does), so that each pretraining run is compared
            with a loop on its own batches (their padded text length is reported: `mean_padded_tokens`).
Two rates each:
  step rate   samples/s over --steps batches after --warmup batches of epoch 0 (whole batches only): what
              the loop does per batch (drawing captions, indexing the images, padding, the loss read-back,
              clipping, the schedule).
  epoch rate  (pretrain only) epoch 1's samples over the time from the last batch of epoch 0 to the last of
              epoch 1: the per-batch work and epoch 0's validation and checkpoint, and with hard negatives
              the grouping before epoch 1 (embedding every training image, `neighbour_groups`).
The ratios divide by the step rate of the matching raw loop (off: raw, on: raw-hard) of the same round.
--rounds rounds, in the order raw, off, raw-hard, on, then reversed, and so on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import islice
from pathlib import Path

from bench.machine import header, log, peak_rss_mb, run_child, wait_idle, write_results
from bench.stream_memory import prepare

REPO = Path(__file__).resolve().parent.parent
MODES = ("raw", "off", "raw-hard", "on")  # raw loop, pretraining with hard negatives off, raw loop, pretraining on
BASE = {"off": "raw", "on": "raw-hard"}  # the raw loop on the same batches


class Enough(Exception):
    """Raised from the step callback once the last measured batch is done."""


def epoch_shape(n: int, batch: int) -> tuple[int, int]:
    """(batches, samples) of one epoch of n pairs: `_pair_batches` drops a last batch of one pair."""
    rest = n % batch if n % batch >= 2 else 0
    return n // batch + (1 if rest else 0), n // batch * batch + rest


def load_demo(processed: str, limit: int, overrides: dict) -> tuple:
    """The demo config with `overrides`, the train and val splits (the first `limit` samples of each when > 0),
    and the vocabulary size."""
    from mmcore.catalog import ProcessedDir
    from mmcore.config import load_config
    from mmcore.data.dataset import SampleSet, load_samples, load_tokenizer

    cfg = load_config("demo", {"pretrain.objective": "contrastive", **overrides})  # the contrastive step
    out = ProcessedDir(Path(processed))

    def first(data: SampleSet) -> SampleSet:
        if not limit:
            return data
        cut = lambda items: items[:limit]  # noqa: E731
        return SampleSet(cut(data.sample_ids), cut(data.splits), data.images[:limit], cut(data.captions),
                         cut(data.caption_ids), cut(data.qa), cut(data.question_ids))

    return cfg, first(load_samples(out, ("train",))), first(load_samples(out, ("val",))), load_tokenizer(out).vocab_size


def rate(stamps: dict[int, float], first: int, last: int, samples: int) -> float:
    """samples/s between the end of batch `first` and the end of batch `last`."""
    return round(samples / (stamps[last] - stamps[first]), 2)


def child_pretrain(processed: str, hard: bool, warmup: int, steps: int, limit: int) -> dict:
    """Two epochs of pretraining, timed by batch; stops after the last batch of epoch 1."""
    import tempfile

    import torch

    from mmcore.catalog import PretrainDir
    from mmcore.training.contrastive import pretrain, with_captions

    cfg, train, val, vocab = load_demo(processed, limit, {
        "pretrain.data": "memory", "pretrain.hard_negatives": 4 if hard else 0, "pretrain.hard_from_epoch": 0,
        "pretrain.epochs": 2, "pretrain.log_every_steps": 1})
    size = cfg.pretrain.batch_size
    pairs = len(with_captions(train))
    per_epoch, samples = epoch_shape(pairs, size)
    if warmup + steps > per_epoch - 1:
        raise ValueError(f"--warmup {warmup} + --steps {steps} must be below the {per_epoch - 1} whole batches of "
                         f"an epoch of {samples} samples")
    stamps: dict[int, float] = {}
    # on_step numbers batches epoch * steps_per_epoch + i, and steps_per_epoch counts a dropped one-pair batch
    last = -(-pairs // size) + per_epoch - 1

    def on_step(n: int, metrics: dict) -> None:
        stamps[n] = time.perf_counter()
        if n == last:
            raise Enough

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            pretrain(train, val, cfg.encoder, cfg.pretrain, vocab, PretrainDir(Path(tmp)), torch.device("cpu"),
                     on_step=on_step)
        except Enough:
            pass
    if last not in stamps:
        raise RuntimeError(f"pretraining stopped after batch {max(stamps, default=-1)}, expected {last}")
    return {"step_samples_per_s": rate(stamps, warmup - 1, warmup + steps - 1, steps * size),
            "epoch_samples_per_s": rate(stamps, per_epoch - 1, last, samples), "epoch_samples": samples,
            "epoch_batches": per_epoch, "first_batch_s": round(stamps[0] - started, 2),
            "val_samples": len(val)}


def child_raw(processed: str, hard: bool, warmup: int, steps: int, limit: int) -> dict:
    """The raw loop on pre-made batches (those of pretraining's epoch 0): forward, loss, backward, AdamW step."""
    import torch

    from mmcore.losses import contrastive_loss
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.training.contrastive import _hard_negative_groups, _pair_batches, with_captions
    from mmcore.training.loop import seed_everything

    cfg, train, _, vocab = load_demo(processed, limit, {
        "pretrain.data": "memory", "pretrain.hard_negatives": 4 if hard else 0, "pretrain.hard_from_epoch": 0})
    p, device, train = cfg.pretrain, torch.device("cpu"), with_captions(train)
    seed_everything(p.seed)  # as pretrain does before building: the same initial weights
    model = build_dual_encoder(cfg.encoder, vocab, temperature=p.temperature).to(device)
    groups = _hard_negative_groups(model, train, p, 0, device)  # None with hard negatives off
    batches = list(islice(_pair_batches(train, p.batch_size, p.seed, 0, device, groups), warmup + steps))
    if len(batches) < warmup + steps or len(batches[-1][0]) != p.batch_size:
        raise ValueError(f"--warmup {warmup} + --steps {steps} whole batches of {p.batch_size} are more than the "
                         f"epoch holds")
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=p.lr, weight_decay=p.weight_decay)
    stamps: dict[int, float] = {}
    for n, (images, ids) in enumerate(batches):  # images (B, 3, S, S) uint8, ids (B, T) long
        opt.zero_grad(set_to_none=True)
        out = model(images, ids)
        contrastive_loss(out.image_embedding, out.text_embedding, out.logit_scale)["loss"].backward()
        opt.step()
        stamps[n] = time.perf_counter()
    padded = sum(ids.shape[1] for _, ids in batches[warmup:]) / steps
    return {"step_samples_per_s": rate(stamps, warmup - 1, warmup + steps - 1, steps * p.batch_size),
            "mean_padded_tokens": round(padded, 2)}


def child(processed: str, mode: str, warmup: int, steps: int, limit: int, threads: int) -> None:
    """Runs in a fresh process: one measurement, one JSON line out."""
    import torch

    torch.set_num_threads(threads)
    if mode.startswith("raw"):
        result = child_raw(processed, mode == "raw-hard", warmup, steps, limit)
    else:
        result = child_pretrain(processed, mode == "on", warmup, steps, limit)
    print(json.dumps({"mode": mode, **result, "threads": torch.get_num_threads(),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


def run(processed: str, mode: str, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process, with the other processes' load (cores) meanwhile."""
    cmd = [sys.executable, "-m", "bench.train_efficiency", "--child", processed, mode, str(args.warmup),
           str(args.steps), str(args.limit), str(args.threads)]
    before = wait_idle(args.idle_wait)
    result = run_child(cmd, REPO, mode)
    result["others_before_cores"] = round(before, 2)
    return result


def summary(rounds: list[dict[str, dict]]) -> dict:
    """Each round's ratios to the step rate of the raw loop on the same batches, and their means."""
    out: dict = {}
    for hard in ("off", "on"):
        for kind in ("step", "epoch"):
            ratios = [round(r[hard][f"{kind}_samples_per_s"] / r[BASE[hard]]["step_samples_per_s"], 3)
                      for r in rounds if hard in r]
            if ratios:
                out[f"{kind}_ratio_hard_{hard}"] = {"rounds": ratios, "mean": round(sum(ratios) / len(ratios), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=6, metavar=("PROCESSED", "MODE", "WARMUP", "STEPS", "LIMIT", "THREADS"))
    parser.add_argument("--root", default=str(REPO / ".mm" / "bench-stream"), help="bench.stream_memory's data")
    parser.add_argument("--images", type=int, default=3000, help="synthetic scenes (the demo data)")
    parser.add_argument("--warmup", type=int, default=10, help="batches before the step clock starts")
    parser.add_argument("--steps", type=int, default=25, help="batches timed for the step rate")
    parser.add_argument("--limit", type=int, default=0, help="only the first N train and val samples (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--idle-wait", type=float, default=30.0, help="at most this many s waiting for a quiet machine")
    parser.add_argument("--smoke", action="store_true", help="mark the results file as a smoke run")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_efficiency.json"))
    args = parser.parse_args()
    if args.child:
        processed, mode, warmup, steps, limit, threads = args.child
        child(processed, mode, int(warmup), int(steps), int(limit), int(threads))
        return
    missing = [f"{BASE[m]} (for {m})" for m in args.modes if m in BASE and BASE[m] not in args.modes]
    if missing:
        parser.error(f"--modes needs {', '.join(missing)}: the ratios divide by its rate")
    start = time.perf_counter()
    demo = prepare(Path(args.root) / "demo", args.images, "demo")
    import torch

    res = {**header("bench.train_efficiency", {"torch": torch.__version__}), "smoke": args.smoke,
           "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out", "smoke")}}
    # the order alternates (raw, off, raw-hard, on; on, raw-hard, off, raw; ...): a drift of the machine's speed
    # evens out
    res["rounds"] = [{mode: run(demo, mode, args) for mode in (args.modes if r % 2 == 0 else args.modes[::-1])}
                     for r in range(args.rounds)]
    res["summary"] = summary(res["rounds"])
    log(json.dumps(res["summary"]))
    write_results(res, start, Path(args.out))
    log(f"written to {args.out}")


if __name__ == "__main__":
    main()
