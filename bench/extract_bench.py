"""Extract-stage benchmark (issue 4, part): `extract_shard` throughput against the raw forward pass.

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.ingest_bench import _machine_busy, _own_cpu, log, wait_idle
from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.data.dataset import load_tokenizer
from mmcore.data.shards import decode_png
from mmcore.data.synth import generate_shapes
from mmcore.features import Clock, caption_batches, extract_shard
from mmcore.models.contrastive import DualEncoder, build_dual_encoder
from mmcore.stages import ingest
from mmcore.training.loop import pad_batch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "extract.json"
IMAGE_SIZE = 64
BATCH = 256  # extract_shard's default, which the extract stage uses
ENCODER_SHA = "bench"  # extract_shard only stores it in the shard's spec
# The pieces extract_shard's clock reports, in the order the tables show them (a piece the library adds
# later is reported after these).
PIECES = ["hash_input", "read_parquet", "decode_png", "image_forward", "pad_captions", "text_forward",
          "convert_outputs", "write_parquet"]
FORWARD = ["image_forward", "text_forward"]


# --- data ---------------------------------------------------------------------------------------------


def processed_dataset(work: Path, n: int) -> tuple[PipelineConfig, Catalog]:
    """The demo preset over `n` shapes images under `work`, ingested by the ingest stage once and cached."""
    cfg = load_config("demo", {"data_root": str(work / f"shapes-{n}"), "ingest.image_size": IMAGE_SIZE,
                               "ingest.shard_size": 1000})
    cat = Catalog.from_config(cfg)
    if not cat.processed.manifest.exists():  # written last by the ingest stage: the dataset is complete
        shutil.rmtree(cat.raw, ignore_errors=True)  # what a killed run left
        t0 = time.perf_counter()
        generate_shapes(cat.raw, n, seed=0, image_size=IMAGE_SIZE)
        log(f"  generated {n} shapes images in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        result = ingest.run(cfg, cat, workers=2)
        log(f"  ingested: {result.accepted} accepted, {result.rejected} rejected, "
            f"{len(cat.processed.entries())} shards in {time.perf_counter() - t0:.0f} s")
    return cfg, cat


Batches = list[tuple[list[torch.Tensor], list[torch.Tensor]]]  # per shard: image batches, caption batches


def premade_batches(cat: Catalog, shards: list[int], pad_id: int) -> tuple[Batches, Batches]:
    """Per shard: the image batches (B, 3, S, S) uint8 and caption batches (B, T) long extract_shard makes,
    and the same with the caption batches in shard order (the stage's batching before it sorted)."""
    stage, shard_order = [], []
    for index in shards:
        blobs = pq.read_table(cat.processed.samples(index), columns=["image"])["image"].to_pylist()
        images = torch.from_numpy(np.stack([decode_png(b) for b in blobs]))  # one uint8 tensor per shard
        image_batches = [images[i : i + BATCH] for i in range(0, len(images), BATCH)]
        column = pq.read_table(cat.processed.tokens(index), columns=["caption_ids"])["caption_ids"]
        stage.append((image_batches, caption_batches(column, pad_id, BATCH)[1]))
        flat = [caption for caps in column.to_pylist() for caption in caps]
        text_batches = [pad_batch(flat[i : i + BATCH], pad_id) for i in range(0, len(flat), BATCH)]
        shard_order.append((image_batches, text_batches))
    return stage, shard_order


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


def bench(args: argparse.Namespace) -> dict:
    log(f"data: {args.images} shapes images, {IMAGE_SIZE} px, shards of 1000 (cached under {args.work})")
    cfg, cat = processed_dataset(args.work, args.images)
    shards = list(cat.processed.entries())
    tok = load_tokenizer(cat.processed)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_dual_encoder(cfg.encoder, tok.vocab_size, tok.pad_id).eval()
    log("pre-making decoded image batches and padded caption batches for the raw forward pass (not timed)")
    batches, shard_order = premade_batches(cat, shards, model.text_encoder.pad_id)
    n_images = sum(len(x) for ib, _ in batches for x in ib)
    n_captions = sum(len(x) for _, tb in batches for x in tb)
    max_tokens = max(x.shape[1] for _, tb in batches for x in tb)
    log(f"  {len(shards)} shards, {n_images} images, {n_captions} captions (padded width <= {max_tokens})")
    log("warm-up: one extract pass and one raw forward pass in shard order (checks that they agree)")
    diff, text_diff = check_same(model, cat, shards, shard_order)
    log(f"  max |extract_shard - raw forward|: image embeddings {diff:.2e}, text embeddings {text_diff:.2e}")

    runs: dict[str, list[dict]] = {"extract": [], "forward": [], "forward_shard_order": [], "breakdown": []}
    for r in range(args.repeat):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            fresh(cat)
            before = wait_idle(args.idle_wait)
            pieces = dict.fromkeys(PIECES, 0.0)
            cpu0, busy0 = _own_cpu(), _machine_busy()
            t0 = time.perf_counter()
            if name == "extract":
                rows = run_extract(model, cat, shards)
            elif name == "forward":
                rows = run_forward(model, batches, pieces)
            elif name == "forward_shard_order":
                rows = run_forward(model, shard_order, pieces)
            else:
                rows = run_extract(model, cat, shards, clock_into(pieces))
            secs = time.perf_counter() - t0
            own, busy = _own_cpu() - cpu0, _machine_busy() - busy0
            others = max(0.0, busy - own) / secs
            if rows != n_images:
                raise RuntimeError(f"{name}: {rows} rows, expected {n_images}")
            run = {"seconds": secs, "cpu_s": own, "others_cores": others, "others_cores_before": before}
            if name != "extract":
                run["pieces"] = pieces if name == "breakdown" else {k: pieces[k] for k in FORWARD}
            runs[name].append(run)
            log(f"  run {r + 1}/{args.repeat} {name:19s} {secs:6.2f} s  {rows / secs:7.1f} images/s  "
                f"(CPU {own:.1f} s; other processes {before:.2f} cores before, {others:.2f} during)")
    shutil.rmtree(cat.features.path, ignore_errors=True)

    best = {name: min(rs, key=lambda x: x["seconds"]) for name, rs in runs.items()}
    summary = {name: {"best_seconds": round(b["seconds"], 3), "images_per_s": round(n_images / b["seconds"], 1),
                      "cpu_s": round(b["cpu_s"], 2), "others_cores": round(b["others_cores"], 2),
                      "median_seconds": round(float(np.median([x["seconds"] for x in runs[name]])), 3),
                      "all_seconds": [round(x["seconds"], 3) for x in runs[name]],
                      "all_others_cores": [round(x["others_cores"], 2) for x in runs[name]]}
               for name, b in best.items()}
    ratio = best["forward"]["seconds"] / best["extract"]["seconds"]  # = (a) images/s / (b) images/s
    ratio_median = summary["forward"]["median_seconds"] / summary["extract"]["median_seconds"]
    # Per piece: the best of the repeats (each piece's own minimum), and the shares of the best breakdown run.
    bd = best["breakdown"]
    names = PIECES + sorted({p for x in runs["breakdown"] for p in x["pieces"]} - set(PIECES))
    piece_best = {p: min(x["pieces"].get(p, 0.0) for x in runs["breakdown"]) for p in names}
    breakdown = {p: {"best_seconds": round(piece_best[p], 3),
                     "share_of_extract": round(piece_best[p] / best["extract"]["seconds"], 3)} for p in names}
    forward_in_extract = piece_best["image_forward"] + piece_best["text_forward"]
    raw_forward = {p: round(min(x["pieces"][p] for x in runs["forward"]), 3) for p in FORWARD}
    raw_shard_order = {p: round(min(x["pieces"][p] for x in runs["forward_shard_order"]), 3) for p in FORWARD}
    overhead = {p: piece_best[p] for p in names if p not in FORWARD}
    return {
        "images": n_images, "captions": n_captions, "shards": len(shards), "image_size": IMAGE_SIZE,
        "batch_size": BATCH, "threads": args.threads, "max_caption_tokens": max_tokens, "repeat": args.repeat,
        "model": {"preset": "demo", **cfg.encoder.model_dump(mode="json"), "vocab_size": tok.vocab_size,
                  "weights": "untrained (torch.manual_seed(0))",
                  "image_feature_widths": {"embedding": model.image_proj.out_features,
                                           "pooled": model.image_encoder.out_channels,
                                           "grid": f"{model.image_encoder.grid_channels} x "
                                                   f"{model.image_encoder.grid ** 2}"}},
        "max_abs_embedding_diff_extract_vs_forward": diff,
        "max_abs_text_embedding_diff_extract_vs_shard_order_forward": text_diff,
        "runs": summary,
        "ratio_extract_over_forward": round(ratio, 3),
        "ratio_extract_over_forward_medians": round(ratio_median, 3),
        "goal": "extract_shard images/s >= 0.85 x raw forward images/s",
        "goal_met": ratio >= 0.85,
        "breakdown": breakdown,
        "breakdown_total_seconds": round(bd["seconds"], 3),
        "breakdown_clocked_seconds": round(sum(bd["pieces"].values()), 3),  # what the clock saw of that run
        "breakdown_forward_seconds": round(forward_in_extract, 3),
        "raw_forward_pieces_seconds": raw_forward,
        "raw_forward_shard_order_pieces_seconds": raw_shard_order,
        "breakdown_overhead_seconds": round(sum(overhead.values()), 3),
        "note": "breakdown pieces: each piece's best over the repeats of (c), extract_shard with its clock; "
                "share_of_extract = piece seconds / best (a) seconds; building the Arrow table is part of "
                "convert_outputs (a build_table piece in results from before)",
    }


LABELS = {"hash_input": "hash the sample shard (skip-if-unchanged spec)",
          "read_parquet": "read samples + tokens Parquet (image bytes to a list)",
          "decode_png": "decode PNGs (libpng on --threads threads), stack",
          "image_forward": "`encode_image` (forward)",
          "pad_captions": "caption id matrix, sorted by length into padded batches",
          "text_forward": "`encode_text` (forward)",
          "convert_outputs": "convert outputs (`.cpu()`, cat, `vectors`, list offsets), build the Arrow table",
          "write_parquet": "write the Parquet shard (`write_table`)"}


def tables(res: dict) -> str:
    r = res["runs"]
    out = [f"{res['images']:,} images ({res['image_size']} px, {res['shards']} shards) and {res['captions']:,} "
           f"captions, demo preset encoder, batch {res['batch_size']}, {res['threads']} threads, best (and median) "
           f"of {res['repeat']}:\n",
           "| run | seconds | images/s | vs raw forward | median seconds | others' load (cores) |",
           "|---|---|---|---|---|---|"]
    names = {"extract": "(a) `extract_shard` over all shards", "forward": "(b) raw forward (`encode_image` + "
             "`encode_text` on pre-made tensors, the stage's batches)",
             "forward_shard_order": "(b0) raw forward, caption batches in shard order (reference)",
             "breakdown": "(c) `extract_shard` with its clock (breakdown)"}
    for k in ("extract", "forward", "forward_shard_order", "breakdown"):
        out.append(f"| {names[k]} | {r[k]['best_seconds']:.2f} | {r[k]['images_per_s']:.0f} | "
                   f"{r['forward']['best_seconds'] / r[k]['best_seconds']:.2f} | {r[k]['median_seconds']:.2f} | "
                   f"{r[k]['others_cores']:.2f} |")
    out.append(f"\nRatio (a)/(b): **{res['ratio_extract_over_forward']:.2f}** (goal >= 0.85: "
               f"{'met' if res['goal_met'] else 'NOT met'}); from the medians: "
               f"{res['ratio_extract_over_forward_medians']:.2f}\n")
    out += ["Where (a)'s time goes (each piece's best of the repeats of (c)):\n",
            "| piece | seconds | share of (a) |", "|---|---|---|"]
    for p, b in res["breakdown"].items():
        out.append(f"| {LABELS.get(p, p)} | {b['best_seconds']:.2f} | {100 * b['share_of_extract']:.1f}% |")
    raw = res["raw_forward_pieces_seconds"]
    out.append(f"\nForward inside extract: {res['breakdown_forward_seconds']:.2f} s (raw forward (b): image "
               f"{raw['image_forward']:.2f} s + text {raw['text_forward']:.2f} s; text in shard order (b0): "
               f"{res['raw_forward_shard_order_pieces_seconds']['text_forward']:.2f} s); everything else: "
               f"{res['breakdown_overhead_seconds']:.2f} s.\n")
    return "\n".join(out)


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
    res: dict = {"machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                             "python": platform.python_version(), "torch": torch.__version__,
                             "pyarrow": pa.__version__, "numpy": np.__version__},
                 "date": time.strftime("%Y-%m-%d"),
                 "command": "python -m bench.extract_bench " + " ".join(sys.argv[1:])}
    res["extract"] = bench(args)
    res["total_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(tables(res["extract"]))
    log(f"done in {res['total_seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
