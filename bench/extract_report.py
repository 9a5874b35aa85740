"""The markdown tables of the extract benchmark (bench/extract_bench.py), from its results."""

from __future__ import annotations

# The pieces of extract_shard's clock, as the breakdown table names them (an unknown piece: its own name).
LABELS = {"hash_input": "hash the sample shard (skip-if-unchanged spec)",
          "read_parquet": "read samples + tokens Parquet (image bytes to a list)",
          "decode_png": "decode PNGs (libpng on --threads threads), stack",
          "image_forward": "`encode_image` (forward)",
          "pad_captions": "caption id matrix, sorted by length into padded batches",
          "text_forward": "`encode_text` (forward)",
          "convert_outputs": "convert outputs (`.cpu()`, cat, `vectors`, list offsets), build the Arrow table",
          "write_parquet": "write the Parquet shard (`write_table`)"}


def tables(res: dict) -> str:
    """The runs table, the ratio (a)/(b), where (a)'s time goes, and the forward inside (a)."""
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
