"""(c) of the ingest benchmark (bench/ingest_bench.py): writing and reading a feature matrix as the feature
shards store it (one fixed-size float32 byte string per row), against np.save/np.load and the
FixedSizeList<float32> layout the shards had before."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.machine import log, wait_idle
from mmcore.data.shards import vectors, vectors_to_numpy, write_table

EMB_DIM = 256
NPY = "np.save / np.load (.npy)"  # the reference the other layouts are compared with


class Layout(NamedTuple):
    """One way to store the matrices: how to write them, how to read them back, the files it makes."""

    write: Callable[[], None]
    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    files: list[str]


def feature_matrices(rows: int, grid_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A (rows, EMB_DIM) embedding and a (rows, grid_dim) post-activation grid, float32, seed 2."""
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((rows, EMB_DIM), dtype=np.float32)
    grid = np.maximum(rng.standard_normal((rows, grid_dim), dtype=np.float32), 0)  # post-activation: ~half zeros
    return emb, grid


def _fsl(matrix: np.ndarray) -> pa.Array:  # the layout feature shards had before
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """(N, W) float32 from either layout: the shards' vector bytes, or the FixedSizeList they had before."""
    if pa.types.is_fixed_size_list(column.type):
        return column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
    return vectors_to_numpy(column)


def _read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(path)
    return _matrix(t["image_embedding"]), _matrix(t["image_grid"])


def layouts(folder: Path, emb: np.ndarray, grid: np.ndarray, cells: int) -> dict[str, Layout]:
    """The layouts compared, by the name the tables show, each writing `emb` and `grid` under `folder`."""
    fsl_schema = pa.schema([("image_embedding", pa.list_(pa.float32(), emb.shape[1])),
                            ("image_grid", pa.list_(pa.float32(), grid.shape[1]))])

    def w_npy() -> None:
        np.save(folder / "emb.npy", emb)
        np.save(folder / "grid.npy", grid)

    def r_npy() -> tuple[np.ndarray, np.ndarray]:
        return np.load(folder / "emb.npy"), np.load(folder / "grid.npy")

    def w_fsl(compression: str) -> None:
        table = pa.table({"image_embedding": _fsl(emb), "image_grid": _fsl(grid)}, schema=fsl_schema)
        pq.write_table(table, folder / f"fsl-{compression}.parquet", compression=compression)

    def w_vectors() -> None:  # the project's feature shards: mmcore.data.shards.vectors + write_table
        table = pa.table({"image_embedding": vectors(emb), "image_grid": vectors(grid)})
        write_table(folder / "vectors.parquet", table, {"cells": cells})

    return {
        NPY: Layout(w_npy, r_npy, ["emb.npy", "grid.npy"]),
        "Parquet vector bytes per row, uncompressed (the project's write_table)": Layout(
            w_vectors, lambda: _read_pair(folder / "vectors.parquet"), ["vectors.parquet"]),
        "Parquet FixedSizeList, zstd (the layout before)": Layout(
            lambda: w_fsl("zstd"), lambda: _read_pair(folder / "fsl-zstd.parquet"), ["fsl-zstd.parquet"]),
        "Parquet FixedSizeList, uncompressed": Layout(
            lambda: w_fsl("none"), lambda: _read_pair(folder / "fsl-none.parquet"), ["fsl-none.parquet"]),
    }


def _measure(name: str, layout: Layout, emb: np.ndarray, grid: np.ndarray, folder: Path, repeat: int,
             idle_wait: float) -> dict:
    """Best of `repeat` write-then-read-back timings of one layout; fails if what is read back differs."""
    mb = (emb.nbytes + grid.nbytes) / 1e6
    wt, rt = [], []
    before = wait_idle(idle_wait)
    for _ in range(repeat):
        t0 = time.perf_counter()
        layout.write()
        wt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        e, g = layout.read()
        rt.append(time.perf_counter() - t0)
        if not (np.array_equal(e, emb) and np.array_equal(g, grid)):
            raise RuntimeError(f"{name}: read back differs from what was written")
        del e, g
    size = sum((folder / f).stat().st_size for f in layout.files) / 1e6
    log(f"  {name:46s} write {min(wt):6.2f} s ({mb / min(wt):6.0f} MB/s)  read {min(rt):6.2f} s "
        f"({mb / min(rt):6.0f} MB/s)  file {size:.0f} MB")
    return {"write_s": round(min(wt), 3), "read_s": round(min(rt), 3), "file_mb": round(size, 1),
            "write_mb_s": round(mb / min(wt), 1), "read_mb_s": round(mb / min(rt), 1),
            "others_cores_before": round(before, 2)}


def bench_shards(work: Path, rows: int, grid_channels: int, cells: int, repeat: int, idle_wait: float) -> dict:
    """Each layout's best write and read speed for a `rows` x (EMB_DIM + grid_channels * cells) feature set."""
    grid_dim = grid_channels * cells
    log(f"c. feature shard I/O: {rows} x {EMB_DIM} embedding + {rows} x {grid_dim} grid (float32)")
    emb, grid = feature_matrices(rows, grid_dim)
    folder = work / "shards"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results = {name: _measure(name, layout, emb, grid, folder, repeat, idle_wait)
               for name, layout in layouts(folder, emb, grid, cells).items()}
    for r in results.values():
        r["write_vs_npy"] = round(r["write_mb_s"] / results[NPY]["write_mb_s"], 3)
        r["read_vs_npy"] = round(r["read_mb_s"] / results[NPY]["read_mb_s"], 3)
    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "embedding_dim": EMB_DIM, "grid": f"{grid_channels} x {cells}",
            "array_mb": round((emb.nbytes + grid.nbytes) / 1e6, 1), "repeat": repeat,
            "note": "page cache warm (files just written); MB = raw float32 bytes", "methods": results}


def shards_table(s: dict) -> list[str]:
    """The markdown table of (c)."""
    out = [f"Feature matrices, {s['rows']:,} x {s['embedding_dim']} + {s['rows']:,} x ({s['grid']}) float32 "
           f"= {s['array_mb']:.0f} MB, best of {s['repeat']}, warm page cache:\n",
           "| layout | write MB/s | read MB/s | write vs npy | read vs npy | file MB |",
           "|---|---|---|---|---|---|"]
    for name, r in s["methods"].items():
        out.append(f"| {name} | {r['write_mb_s']:.0f} | {r['read_mb_s']:.0f} | {r['write_vs_npy']:.2f} | "
                   f"{r['read_vs_npy']:.2f} | {r['file_mb']:.0f} |")
    out.append("")
    return out
