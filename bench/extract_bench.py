"""Extract-stage benchmark: `extract_shard` throughput against the raw forward pass.

From the repository root:

    .venv/bin/python -m bench.extract_bench   # defaults (1,000 images = one demo shard): ~1.5 min on a quiet
                                              # 2-core CPU; up to ~10 min when it must wait (<= 30 s a timing)
    .venv/bin/python -m bench.extract_bench --images 300 --repeat 1   # ~1 min, a smoke test

The first run (+ ~15 s) makes a processed dataset once and caches it under --work (not timed): the demo preset
with data_root = a folder under --work, `generate_shapes` (--images 64 px scenes) into the catalog's raw folder,
then the ingest stage itself (`mmcore.stages.ingest.run(cfg, cat, workers=2)`: shards of 1,000, the tokenizer,
the token shards with max_len = the demo encoder's max_text_len, the manifest). The shards are read through
`cat.processed` and the feature shards go to `cat.features`, as the extract stage writes them.

The model is the demo preset's dual encoder (mobilenet_v3_small, small_input, grid 4, multiscale, GRU text
encoder), untrained (seed 0), eval mode, no_grad, `torch.set_num_threads(--threads)`, on the CPU, with the
extract stage's default batch size (256). Four timings per repeat, interleaved (in reverse order every other
repeat, so none always runs first), best and median of --repeat kept:

a. `extract_shard` over every shard, into an output folder emptied before the clock starts: the stage's real
   work (hash the input, read the shards, decode the PNGs, image forward, text forward, convert outputs, build
   and write Parquet).
b. The raw forward pass: the same images already decoded into one uint8 tensor per batch and the same
   caption batches already padded (made before timing), running exactly the calls extract_shard makes
   (`encode_image` per image batch, `encode_text` per caption batch, same batch boundaries); nothing else.
   The stage batches captions sorted by length (`caption_batches`), so (b) does too: (a)/(b) then
   measures the stage's overhead, neither crediting nor charging it for how it batches captions.
b0. For reference, (b) with the caption batches in shard order, each padded to its longest caption (how the
   stage batched before it sorted): what sorting saves in the forward itself.
c. The breakdown of (a): `extract_shard(..., clock=...)`, the library's own function, which reports the
   seconds of each piece of its work (hash_input, read_parquet, decode_png, image_forward, convert_outputs,
   pad_captions, text_forward, write_parquet; see mmcore/features.py). Its total against (a) is what the
   clock itself costs. Results before the clock existed (a timed copy of the function) had a separate
   `build_table` piece; building the Arrow table is now part of `convert_outputs`.

Reports images/s of (a) and (b) and their ratio (goal: (a)/(b) >= 0.85) from the best runs, the same ratio
from the medians (quiet-machine repeats of one timing still differ by up to ~20% on the 2-core development
machine, so a single best-of ratio moves by ~0.1 between runs of the benchmark), prints markdown tables and
writes bench/results/extract.json. The machine may be shared: before every timing it waits (up to --idle-wait s) for
other processes to use < 0.15 cores, and records their load during each run ("others_cores").

Layout: the data in bench/extract_data.py, the tables in bench/extract_report.py, the machine-load helpers in
bench/machine.py; this file holds the timed runs and the summary of what they measured.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bench.extract_data import BATCH, IMAGE_SIZE, Batches, premade_batches, processed_dataset
from bench.extract_report import tables
from bench.machine import best_of, header, log, spread, timed, write_results
from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.features import Clock, extract_shard
from mmcore.models.contrastive import DualEncoder, build_dual_encoder

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "extract.json"
ENCODER_SHA = "bench"  # extract_shard only stores it in the shard's spec
# The pieces extract_shard's clock reports, in the order the tables show them (a piece the library adds
# later is reported after these).
PIECES = ["hash_input", "read_parquet", "decode_png", "image_forward", "pad_captions", "text_forward",
          "convert_outputs", "write_parquet"]
FORWARD = ["image_forward", "text_forward"]


# --- the timed runs -----------------------------------------------------------------------------------


def fresh(cat: Catalog) -> Path:
    """An empty features folder, made before a timing: deleting the last run's shards is not the stage's work."""
    shutil.rmtree(cat.features.path, ignore_errors=True)
    cat.features.path.mkdir(parents=True)
    return cat.features.path


def run_extract(model: DualEncoder, cat: Catalog, shards: list[int], clock: Clock | None = None) -> int:
    """(a), and with a clock (c): the library's extract_shard over every shard, into `cat.features`."""
    rows = 0
    for i in shards:
        res = extract_shard(model, cat.processed.samples(i), cat.processed.tokens(i), cat.features.shard(i),
                            ENCODER_SHA, torch.device("cpu"), BATCH, clock)
        if res["skipped"]:
            raise RuntimeError("extract_shard skipped a shard: the output folder was not fresh")
        rows += res["rows"]
    return rows


def clock_into(pieces: dict[str, float]) -> Clock:
    """An extract_shard clock that adds each piece's seconds to `pieces`."""

    def clock(name: str, seconds: float) -> None:
        pieces[name] = pieces.get(name, 0.0) + seconds

    return clock


@torch.no_grad()
def run_forward(model: DualEncoder, batches: Batches, t: dict[str, float]) -> int:
    rows = 0
    for image_batches, text_batches in batches:
        c = time.perf_counter()
        for images in image_batches:
            model.encode_image(images)
            rows += len(images)
        c2 = time.perf_counter()
        for ids in text_batches:
            model.encode_text(ids)
        t["image_forward"] += c2 - c
        t["text_forward"] += time.perf_counter() - c2
    return rows


# --- the benchmark ------------------------------------------------------------------------------------


def check_same(model: DualEncoder, cat: Catalog, shards: list[int], shard_order: Batches) -> tuple[float, float]:
    """Max |difference| between the image and the text embeddings extract_shard wrote and those of a raw
    forward with shard-order batches (sanity: sorting captions into batches changes only float rounding)."""
    from mmcore.data.shards import vector_lists_to_numpy, vectors_to_numpy

    fresh(cat)
    run_extract(model, cat, shards)
    written = [pq.read_table(cat.features.shard(i), columns=["image_embedding", "text_embeddings"]) for i in shards]
    image = np.concatenate([vectors_to_numpy(t["image_embedding"]) for t in written])
    text = np.concatenate([np.concatenate(vector_lists_to_numpy(t["text_embeddings"])) for t in written])
    with torch.no_grad():
        raw_image = torch.cat([model.encode_image(x).embedding for ib, _ in shard_order for x in ib]).numpy()
        raw_text = torch.cat([model.encode_text(x) for _, tb in shard_order for x in tb]).numpy()
    return float(np.abs(image - raw_image).max()), float(np.abs(text - raw_text).max())



@dataclass
class Setup:
    """What every timing shares, made before the first one (not timed)."""

    cfg: PipelineConfig
    cat: Catalog
    shards: list[int]
    vocab_size: int
    model: DualEncoder
    batches: Batches  # the stage's batches: captions sorted by length
    shard_order: Batches  # the same with the caption batches in shard order
    n_images: int
    n_captions: int
    max_tokens: int  # the widest padded caption batch


def prepare(args: argparse.Namespace) -> Setup:
    """The cached processed dataset, the untrained demo model (seed 0) and the pre-made forward batches."""
    log(f"data: {args.images} shapes images, {IMAGE_SIZE} px, shards of 1000 (cached under {args.work})")
    cfg, cat = processed_dataset(args.work, args.images)
    shards = list(cat.processed.entries())
    tok = load_tokenizer(cat.processed)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_dual_encoder(cfg.encoder, tok.vocab_size, tok.pad_id).eval()
    log("pre-making decoded image batches and padded caption batches for the raw forward pass (not timed)")
    batches, shard_order = premade_batches(cat, shards, model.text_encoder.pad_id)
    setup = Setup(cfg, cat, shards, tok.vocab_size, model, batches, shard_order,
                  n_images=sum(len(x) for ib, _ in batches for x in ib),
                  n_captions=sum(len(x) for _, tb in batches for x in tb),
                  max_tokens=max(x.shape[1] for _, tb in batches for x in tb))
    log(f"  {len(shards)} shards, {setup.n_images} images, {setup.n_captions} captions "
        f"(padded width <= {setup.max_tokens})")
    return setup


def warm_up(s: Setup) -> tuple[float, float]:
    """One extract pass and one raw forward pass; the max |difference| of their image and text embeddings."""
    log("warm-up: one extract pass and one raw forward pass in shard order (checks that they agree)")
    diff, text_diff = check_same(s.model, s.cat, s.shards, s.shard_order)
    log(f"  max |extract_shard - raw forward|: image embeddings {diff:.2e}, text embeddings {text_diff:.2e}")
    return diff, text_diff


RUNS = ("extract", "forward", "forward_shard_order", "breakdown")  # (a), (b), (b0), (c)


def _run(name: str, s: Setup, pieces: dict[str, float]) -> int:
    """One pass of run `name`; the forward and the breakdown runs add their pieces' seconds to `pieces`."""
    if name == "extract":
        return run_extract(s.model, s.cat, s.shards)
    if name == "forward":
        return run_forward(s.model, s.batches, pieces)
    if name == "forward_shard_order":
        return run_forward(s.model, s.shard_order, pieces)
    return run_extract(s.model, s.cat, s.shards, clock_into(pieces))


def timed_run(name: str, s: Setup, idle_wait: float, label: str) -> dict:
    """One timing of run `name` into an emptied features folder, once the machine is quiet."""
    fresh(s.cat)
    pieces = dict.fromkeys(PIECES, 0.0)
    with timed(idle_wait) as t:
        rows = _run(name, s, pieces)
    if rows != s.n_images:
        raise RuntimeError(f"{name}: {rows} rows, expected {s.n_images}")
    run = {"seconds": t.seconds, "cpu_s": t.cpu_s, "others_cores": t.others, "others_cores_before": t.before}
    if name != "extract":
        run["pieces"] = pieces if name == "breakdown" else {k: pieces[k] for k in FORWARD}
    log(f"  {label} {name:19s} {t.seconds:6.2f} s  {rows / t.seconds:7.1f} images/s  "
        f"(CPU {t.cpu_s:.1f} s; other processes {t.before:.2f} cores before, {t.others:.2f} during)")
    return run


def time_runs(s: Setup, repeat: int, idle_wait: float) -> dict[str, list[dict]]:
    """`repeat` timings of each run, interleaved, in reverse order every other repeat (none always runs first)."""
    runs: dict[str, list[dict]] = {name: [] for name in RUNS}
    for r in range(repeat):
        for name in RUNS if r % 2 == 0 else RUNS[::-1]:
            runs[name].append(timed_run(name, s, idle_wait, f"run {r + 1}/{repeat}"))
    shutil.rmtree(s.cat.features.path, ignore_errors=True)
    return runs


# --- what they measured -------------------------------------------------------------------------------


def describe(s: Setup, args: argparse.Namespace) -> dict:
    """The data and the model the runs measured."""
    m = s.model
    return {
        "images": s.n_images, "captions": s.n_captions, "shards": len(s.shards), "image_size": IMAGE_SIZE,
        "batch_size": BATCH, "threads": args.threads, "max_caption_tokens": s.max_tokens, "repeat": args.repeat,
        "model": {"preset": "demo", **s.cfg.encoder.model_dump(mode="json"), "vocab_size": s.vocab_size,
                  "weights": "untrained (torch.manual_seed(0))",
                  "image_feature_widths": {"embedding": m.image_proj.out_features,
                                           "pooled": m.image_encoder.out_channels,
                                           "grid": f"{m.image_encoder.grid_channels} x {m.image_encoder.grid ** 2}"}},
    }


def speeds(runs: dict[str, list[dict]], best: dict[str, dict], n_images: int) -> dict:
    """Each run's best, median and every timing, and the ratio (a)/(b) from the best runs and the medians."""
    summary = {name: {"best_seconds": round(b["seconds"], 3), "images_per_s": round(n_images / b["seconds"], 1),
                      "cpu_s": round(b["cpu_s"], 2), "others_cores": round(b["others_cores"], 2),
                      "median_seconds": round(float(np.median([x["seconds"] for x in runs[name]])), 3),
                      **spread(runs[name])}
               for name, b in best.items()}
    ratio = best["forward"]["seconds"] / best["extract"]["seconds"]  # = (a) images/s / (b) images/s
    ratio_median = summary["forward"]["median_seconds"] / summary["extract"]["median_seconds"]
    return {"runs": summary, "ratio_extract_over_forward": round(ratio, 3),
            "ratio_extract_over_forward_medians": round(ratio_median, 3),
            "goal": "extract_shard images/s >= 0.85 x raw forward images/s", "goal_met": ratio >= 0.85}


def _forward_pieces(runs: list[dict]) -> dict[str, float]:
    """Each forward piece's best over the repeats of one raw forward run."""
    return {p: round(min(x["pieces"][p] for x in runs), 3) for p in FORWARD}


def breakdown(runs: dict[str, list[dict]], best: dict[str, dict]) -> dict:
    """Where (a)'s time goes: per piece the best of the repeats of (c) (each piece's own minimum), its share of
    the best (a), and the forward pieces of (b) and (b0) to set against it."""
    bd = best["breakdown"]
    names = PIECES + sorted({p for x in runs["breakdown"] for p in x["pieces"]} - set(PIECES))
    piece_best = {p: min(x["pieces"].get(p, 0.0) for x in runs["breakdown"]) for p in names}
    overhead = {p: piece_best[p] for p in names if p not in FORWARD}
    return {
        "breakdown": {p: {"best_seconds": round(piece_best[p], 3),
                          "share_of_extract": round(piece_best[p] / best["extract"]["seconds"], 3)} for p in names},
        "breakdown_total_seconds": round(bd["seconds"], 3),
        "breakdown_clocked_seconds": round(sum(bd["pieces"].values()), 3),  # what the clock saw of that run
        "breakdown_forward_seconds": round(piece_best["image_forward"] + piece_best["text_forward"], 3),
        "raw_forward_pieces_seconds": _forward_pieces(runs["forward"]),
        "raw_forward_shard_order_pieces_seconds": _forward_pieces(runs["forward_shard_order"]),
        "breakdown_overhead_seconds": round(sum(overhead.values()), 3),
        "note": "breakdown pieces: each piece's best over the repeats of (c), extract_shard with its clock; "
                "share_of_extract = piece seconds / best (a) seconds; building the Arrow table is part of "
                "convert_outputs (a build_table piece in results from before)",
    }


def bench(args: argparse.Namespace) -> dict:
    """Prepare, warm up and check, time every run, then summarise."""
    s = prepare(args)
    diff, text_diff = warm_up(s)
    runs = time_runs(s, args.repeat, args.idle_wait)
    best = {name: best_of(rs) for name, rs in runs.items()}
    return {**describe(s, args),
            "max_abs_embedding_diff_extract_vs_forward": diff,
            "max_abs_text_embedding_diff_extract_vs_shard_order_forward": text_diff,
            **speeds(runs, best, s.n_images), **breakdown(runs, best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="synthetic shapes images (64 px)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, default=5, help="timings per measurement; the best is kept")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for a quiet machine before each timing")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-extract-bench",
                        help="where the processed dataset is cached and feature shards are written")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = header("bench.extract_bench", {"torch": torch.__version__})
    res["extract"] = bench(args)
    write_results(res, start, args.out)
    print()
    print(tables(res["extract"]))
    log(f"done in {res['total_seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
