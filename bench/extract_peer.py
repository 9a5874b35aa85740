"""Peer benchmark of the extract stage: `extract_shard` against a plain PyTorch DataLoader + model loop writing
`.npy` files, as clip-retrieval's inference does.

From the repository root:

    .venv/bin/python -m bench.extract_peer    # defaults (1,000 images = one demo shard, best of 5): ~2.5 min on a
                                              # quiet 2-core CPU; up to ~15 min when it must wait (<= 30 s a timing)
    .venv/bin/python -m bench.extract_peer --images 300 --repeat 1 --idle-wait 2   # a smoke test, ~1 min

Data, model and threads are bench/extract_bench.py's (its `prepare`: the demo preset's processed shapes dataset
at 64 px, ingested once and cached under --work; the demo dual encoder, untrained, seed 0, eval, no_grad, on the
CPU, `torch.set_num_threads(--threads)`), and so is the batch size (256, the extract stage's). Timed runs, each
into an output folder emptied before the clock starts:

- ours: `mmcore.features.extract_shard(..., fresh=True)` over every sample shard, as the extract stage calls it:
  hash the input, read the Parquet shards, decode the PNGs, image + text forward, write one Parquet feature
  shard (sample_id, split, image embedding, pooled, grid, text embeddings, caption languages).
- peer_wN: the loop clip-retrieval's inference runs (reader -> DataLoader(num_workers=N) -> model -> numpy
  writer), per sample shard: a torch Dataset over the shard's PNG bytes and caption ids (read with pyarrow),
  each item decoded by `torchvision.io.decode_png` in the loader's workers; the collate function stacks a
  batch's images and pads its captions (in shard order) into batches of at most 256, each to its longest
  caption (`pad_batch`); the main process runs `encode_image` and `encode_text` per batch and `np.save`s the
  image embeddings, pooled, grid and text embeddings, plus a metadata Parquet (sample_id, caption count) as
  clip-retrieval writes its metadata beside the embeddings. --workers N (default 2 and 0).
- forward: extract_bench's raw forward (b), the physical limit: the same `encode_image`/`encode_text` calls on
  images decoded and captions padded before timing, with the stage's caption batches (sorted by length);
  forward_shard_order: (b0), the same with shard-order caption batches, like the peer's.

Before timing, one pass of ours and of the peer (N = the first of --workers) must agree: every row of every
image column and every text embedding within 1e-4 (the text batches differ, so float rounding differs). Then
--repeat timings of each run, interleaved (in reverse order every other repeat), each after waiting for a quiet
machine (bench/machine.py). Reports images/s, the ratio ours/peer (goal >= 1.0) from the best runs and from the
medians, and each against the raw forward; writes bench/results/extract_peer.json (extract_peer.smoke.json for
runs below the defaults).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_png

from bench.extract_bench import BATCH, ENCODER_SHA, Setup, fresh, prepare, run_forward
from bench.extract_bench import describe as describe_setup
from bench.machine import best_of, header, log, spread, timed, write_results
from mmcore.data.shards import vector_lists_to_numpy, vectors_to_numpy
from mmcore.features import extract_shard
from mmcore.training.loop import pad_batch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
COLUMNS = ["image_embedding", "image_pooled", "image_grid", "text_embeddings"]  # what both write, per shard
TOLERANCE = 1e-4  # max |ours - peer| allowed for the outputs to count as the same


# --- ours ---------------------------------------------------------------------------------------------


def run_ours(s: Setup) -> int:
    """extract_shard over every sample shard into `cat.features`, as the extract stage runs it."""
    rows = 0
    for i in s.shards:
        res = extract_shard(s.model, s.cat.processed.samples(i), s.cat.processed.tokens(i), s.cat.features.shard(i),
                            ENCODER_SHA, torch.device("cpu"), BATCH, fresh=True)
        rows += res["rows"]
    return rows


# --- the peer: a plain DataLoader + model loop writing .npy -------------------------------------------


class ShardDataset(Dataset):
    """One sample shard: item i is sample i's decoded image (3, S, S) uint8 and its captions' token ids.

    The shard is read once, in the main process, when the loader is made; the workers fork with it."""

    def __init__(self, samples: Path, tokens: Path):
        table = pq.read_table(samples, columns=["sample_id", "image"])
        self.sample_ids = table["sample_id"].to_pylist()
        self.blobs = table["image"].to_pylist()  # PNG bytes
        self.captions = pq.read_table(tokens, columns=["caption_ids"])["caption_ids"].to_pylist()

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[list[int]]]:
        image = decode_png(torch.frombuffer(bytearray(self.blobs[i]), dtype=torch.uint8))  # (3, S, S) uint8
        return image, self.captions[i]


class Collate:
    """A batch of samples -> (images (B, 3, S, S) uint8, caption batches [(<= text_batch, T_k) long], counts)."""

    def __init__(self, pad_id: int, text_batch: int):
        self.pad_id, self.text_batch = pad_id, text_batch

    def __call__(self, items: list[tuple[torch.Tensor, list[list[int]]]]
                 ) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        images = torch.stack([image for image, _ in items])
        flat = [caption for _, caps in items for caption in caps]  # shard order
        texts = [pad_batch(flat[i : i + self.text_batch], self.pad_id) for i in range(0, len(flat), self.text_batch)]
        return images, texts, [len(caps) for _, caps in items]


@torch.no_grad()
def peer_shard(s: Setup, i: int, workers: int, out: Path) -> int:
    """The peer's work on sample shard `i`: load, forward per batch, np.save the outputs."""
    data = ShardDataset(s.cat.processed.samples(i), s.cat.processed.tokens(i))
    collate = Collate(s.model.text_encoder.pad_id, BATCH)
    loader = DataLoader(data, batch_size=BATCH, num_workers=workers, collate_fn=collate)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    counts: list[int] = []
    for images, texts, n_caps in loader:
        x = s.model.encode_image(images)
        parts["image_embedding"].append(x.embedding.numpy())  # (B, D)
        parts["image_pooled"].append(x.pooled.numpy())  # (B, C)
        parts["image_grid"].append(x.grid.flatten(1).numpy())  # (B, C*g*g)
        parts["text_embeddings"] += [s.model.encode_text(ids).numpy() for ids in texts]  # (C_b, D) each
        counts += n_caps
    for name, arrays in parts.items():
        np.save(out / f"{name}-{i:05d}.npy", np.concatenate(arrays))
    pq.write_table(pa.table({"sample_id": data.sample_ids, "caption_count": counts}), out / f"metadata-{i:05d}.parquet")
    return len(data)


def run_peer(s: Setup, workers: int, out: Path) -> int:
    return sum(peer_shard(s, i, workers, out) for i in s.shards)


def empty(folder: Path) -> Path:
    """An empty output folder, made before a timing (deleting the last run's files is not the work timed)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# --- same outputs -------------------------------------------------------------------------------------


def compare(s: Setup, peer_out: Path) -> dict[str, float]:
    """Max |ours - peer| per output over every row of every shard; fails above TOLERANCE or on other rows."""
    diffs = dict.fromkeys(COLUMNS, 0.0)
    for i in s.shards:
        ours = pq.read_table(s.cat.features.shard(i))
        meta = pq.read_table(peer_out / f"metadata-{i:05d}.parquet")
        if ours["sample_id"].to_pylist() != meta["sample_id"].to_pylist():
            raise RuntimeError(f"shard {i}: the peer's sample ids differ from extract_shard's")
        texts = vector_lists_to_numpy(ours["text_embeddings"])
        if [len(t) for t in texts] != meta["caption_count"].to_pylist():
            raise RuntimeError(f"shard {i}: the peer's caption counts differ from extract_shard's")
        mine = {name: vectors_to_numpy(ours[name]) for name in COLUMNS[:3]} | {"text_embeddings": np.concatenate(texts)}
        for name, m in mine.items():
            theirs = np.load(peer_out / f"{name}-{i:05d}.npy")
            if theirs.shape != m.shape:
                raise RuntimeError(f"shard {i} {name}: peer shape {theirs.shape}, extract_shard {m.shape}")
            diffs[name] = max(diffs[name], float(np.abs(theirs - m).max(initial=0.0)))
    if max(diffs.values()) > TOLERANCE:
        raise RuntimeError(f"the peer computes other outputs than extract_shard: max |diff| {diffs} > {TOLERANCE}")
    return diffs


def warm_up(s: Setup, workers: int, peer_out: Path) -> dict[str, float]:
    """One pass of each (not timed); their outputs must agree."""
    log(f"warm-up: one pass of extract_shard and of the peer (num_workers={workers}); comparing every output row")
    fresh(s.cat)
    run_ours(s)
    run_peer(s, workers, empty(peer_out))
    diffs = compare(s, peer_out)
    log("  max |extract_shard - peer|: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    return diffs


# --- the timed runs -----------------------------------------------------------------------------------


def run_once(name: str, s: Setup, peer_out: Path, pieces: dict[str, float]) -> int:
    """One pass of run `name` (ours, peer_wN, forward, forward_shard_order) into an emptied output folder; the
    forward runs add the seconds of their image and text forward calls to `pieces`."""
    fresh(s.cat)
    empty(peer_out)
    if name == "ours":
        return run_ours(s)
    if name.startswith("peer_w"):
        return run_peer(s, int(name.removeprefix("peer_w")), peer_out)
    return run_forward(s.model, s.batches if name == "forward" else s.shard_order, pieces)


def time_runs(s: Setup, names: list[str], args: argparse.Namespace, peer_out: Path) -> dict[str, list[dict]]:
    """`repeat` timings of each run, interleaved, in reverse order every other repeat (none always runs first)."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            pieces = {"image_forward": 0.0, "text_forward": 0.0}
            with timed(args.idle_wait, pool=True) as t:  # pool: the loader workers' CPU too
                rows = run_once(name, s, peer_out, pieces)
            if rows != s.n_images:
                raise RuntimeError(f"{name}: {rows} rows, expected {s.n_images}")
            runs[name].append({"seconds": t.seconds, "cpu_s": t.cpu_s, "workers_cpu_s": t.pool_cpu_s,
                               "others_cores": t.others, "others_cores_before": t.before, "pieces": pieces})
            log(f"  run {r + 1}/{args.repeat} {name:19s} {t.seconds:6.2f} s {rows / t.seconds:7.1f} images/s  "
                f"(CPU {t.cpu_s:.1f} s + workers {t.pool_cpu_s:.1f} s; others {t.before:.2f} cores before, "
                f"{t.others:.2f} during)")
    return runs


def image_forward(runs: list[dict], n_images: int) -> dict:
    """The best `encode_image` seconds alone over the repeats of a raw forward run, and its images/s."""
    seconds = min(x["pieces"]["image_forward"] for x in runs)
    return {"best_seconds": round(seconds, 3), "images_per_s": round(n_images / seconds, 1),
            "text_forward_best_seconds": round(min(x["pieces"]["text_forward"] for x in runs), 3)}


def summarise(runs: dict[str, list[dict]], n_images: int, peers: list[str]) -> dict:
    """Each run's best and median; ours/peer and each against the raw forward, from the best runs and medians."""
    best = {name: best_of(rs) for name, rs in runs.items()}
    med = {name: float(np.median([x["seconds"] for x in rs])) for name, rs in runs.items()}
    summary = {name: {"best_seconds": round(b["seconds"], 3), "images_per_s": round(n_images / b["seconds"], 1),
                      "median_seconds": round(med[name], 3), "cpu_s": round(b["cpu_s"], 2),
                      "workers_cpu_s": round(b["workers_cpu_s"], 2), "others_cores": round(b["others_cores"], 2),
                      "vs_forward": round(best["forward"]["seconds"] / b["seconds"], 3), **spread(runs[name])}
               for name, b in best.items()}
    for name in ("forward", "forward_shard_order"):
        summary[name]["encode_image_alone"] = image_forward(runs[name], n_images)
    ratios = {p: {"best": round(best[p]["seconds"] / best["ours"]["seconds"], 3),
                  "median": round(med[p] / med["ours"], 3)} for p in peers}
    return {"runs": summary, "ours_over_peer": ratios, "goal": "ours images/s >= 1.0 x peer_w2 images/s",
            "goal_met": {p: r["best"] >= 1.0 for p, r in ratios.items()}}


def tables(res: dict) -> str:
    """The markdown tables of one result."""
    e = res["extract_peer"]
    lines = [f"{e['images']:,} images, {e['captions']:,} captions, batch {e['batch_size']}, {e['threads']} torch "
             f"threads, best of {e['repeat']}:\n",
             "| run | seconds | images/s | vs raw forward | median seconds | CPU s (+ workers) | others' load |",
             "|---|---|---|---|---|---|---|"]
    for name, r in e["runs"].items():
        lines.append(f"| {name} | {r['best_seconds']:.2f} | {r['images_per_s']:.0f} | {r['vs_forward']:.2f} | "
                     f"{r['median_seconds']:.2f} | {r['cpu_s']:.1f} (+{r['workers_cpu_s']:.1f}) | "
                     f"{r['others_cores']:.2f} |")
    f = e["runs"]["forward"]["encode_image_alone"]
    lines.append(f"\n`encode_image` alone (in the raw forward run): {f['best_seconds']:.2f} s, "
                 f"{f['images_per_s']:.0f} images/s (text forward {f['text_forward_best_seconds']:.2f} s)")
    lines += ["", "| ours / peer | from best runs | from medians |", "|---|---|---|"]
    lines += [f"| {p} | {r['best']:.2f} | {r['median']:.2f} |" for p, r in e["ours_over_peer"].items()]
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> dict:
    """Prepare (extract_bench's data and model), check that both compute the same, time, summarise."""
    s = prepare(args)
    peer_out = args.work / "peer-npy"
    diffs = warm_up(s, args.workers[0], peer_out)
    peers = [f"peer_w{n}" for n in args.workers]
    runs = time_runs(s, ["ours", *peers, "forward", "forward_shard_order"], args, peer_out)
    shutil.rmtree(s.cat.features.path, ignore_errors=True)
    shutil.rmtree(peer_out, ignore_errors=True)
    return {**describe_setup(s, args), "workers": args.workers, "max_abs_diff_ours_vs_peer": diffs,
            **summarise(runs, s.n_images, peers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="synthetic shapes images (64 px)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (as extract_bench)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0],
                        help="the peer's DataLoader num_workers, one peer run each (the first is checked)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per run; the best is kept")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for a quiet machine before each timing")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-extract-bench",
                        help="where the processed dataset is cached (shared with extract_bench) and outputs go")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/extract_peer[.smoke].json")
    args = parser.parse_args()
    smoke = args.images < 1000 or args.repeat < 2
    out = args.out or RESULTS / ("extract_peer.smoke.json" if smoke else "extract_peer.json")
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = header("bench.extract_peer", {"torch": torch.__version__})
    if smoke:
        res["smoke"] = "validation run below the defaults: not a measurement"
    res["extract_peer"] = bench(args)
    write_results(res, start, out)
    print()
    print(tables(res))
    log(f"done in {res['total_seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
