"""Search latency: the project's text-to-image ranking over 100k and 1M image embeddings, against a brute-force
numpy baseline and approximate-nearest-neighbour (ANN) indexes.

    .venv/bin/python -m bench.search_latency --out bench/results/search_latency.json   # an estimated 30-45 min
                                     # on 2 cores, most of it building the two HNSW graphs of 1M vectors
    .venv/bin/python -m bench.search_latency --sizes 100000 1000000 --queries 60 --warmup 5 --ann faiss-flat \
        --smoke --out bench/results/search_latency-smoke-exact.json         # exact methods only, about a minute

The index is N random unit vectors of the demo model's embedding size (`encoder.embed_dim` of the demo preset,
128) in float32, as `Predictor.index_emb` holds them; the queries are other random unit vectors. Single queries,
k=10, --threads threads (torch, OpenBLAS, OpenMP), --warmup untimed queries first, then --queries timed ones:
  project     the ranking `Predictor.search` calls (`mmcore.inference.rank`) on a prepared (1, D) query
              embedding: the scores as one numpy product, then torch's `topk(k)`.
  numpy       `index @ q`, `argpartition` for the top k, then those k sorted.
  faiss-flat  faiss IndexFlatIP: exact inner-product search.
These three are timed in blocks of consecutive queries (each after the warm-up), in --rounds rounds whose order
of methods alternates, so they share the machine's conditions; a block per method, not a query per method in
turn, as a server runs one of them (on 2 cores the threads one library spins after a call could slow the next's).
  search      one whole `Predictor.search([caption], k)`, on a Predictor whose fields are set here instead of
              read from a bundle: tokenizing, the demo text encoder (a GRU, random weights), the ranking and
              the Match objects; `encode` is the text encoding alone.
  faiss-hnsw, hnswlib   HNSW graphs (--hnsw-m, --ef-construction) at several efSearch;
  faiss-ivf   IndexIVFFlat with 4 sqrt(N) lists (k-means on 50 points per list) at several nprobe.
The ANN rows give their build time and recall@k against the exact top k (numpy's). Random vectors in 128
dimensions have no clusters, the hard case for an ANN index: trained embeddings usually get a higher recall at
the same settings (not measured here).
Before each block the benchmark waits (up to --idle-wait s) for a quiet machine and records the load of the
other processes during it (`others_cores`).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench.machine import header, log, timed, write_results
from mmcore.inference import rank

REPO = Path(__file__).resolve().parent.parent
ANNS = ("faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib")
SIZES, COLOURS = ("small", "large"), ("red", "green", "blue", "yellow", "purple", "cyan", "gray", "orange")
SHAPES, PLACES = ("circle", "square", "triangle"), ("top left", "top right", "center", "bottom left", "bottom right")


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows of length 1, made a chunk at a time (no float64 copy of a 1M index)."""
    rng, out = np.random.default_rng(seed), np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def captions(n: int, seed: int) -> list[str]:
    """Captions worded as the demo's synthetic scenes are ("a large purple triangle in the center and ...")."""
    rng = np.random.default_rng(seed)
    one = lambda: f"a {rng.choice(SIZES)} {rng.choice(COLOURS)} {rng.choice(SHAPES)}"  # noqa: E731
    return [f"{one()} in the {rng.choice(PLACES)} and {one()} at the {rng.choice(PLACES)}" for _ in range(n)]


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(np.mean(ms)), 3)}


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k that `found` (Q, k) holds."""
    k = exact.shape[1]
    return round(float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)])), 4)


def blocks(fns: dict[str, Callable[[int], np.ndarray]], n: int, warmup: int, rounds: int) -> tuple[dict, dict]:
    """Times every fn on queries warmup..n-1, in blocks of consecutive queries (each block after `warmup` untimed
    queries), in `rounds` rounds whose order of fns alternates. Returns each fn's milliseconds and its answers
    (its top-k ids, one row per timed query, in query order)."""
    ms: dict[str, list[float]] = {name: [] for name in fns}
    ids: dict[str, list[np.ndarray]] = {name: [] for name in fns}
    for r, part in enumerate(np.array_split(np.arange(warmup, n), rounds)):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            for i in range(warmup):
                fns[name](i)
            for i in part.tolist():
                t0 = time.perf_counter()
                top = fns[name](i)
                ms[name].append((time.perf_counter() - t0) * 1000)
                ids[name].append(np.asarray(top))
    return ms, {name: np.stack(rows) for name, rows in ids.items()}


def exact_fns(index: np.ndarray, queries: np.ndarray, k: int, with_faiss: bool) -> dict[str, Callable]:
    """The exact rankings, each a function of the query's number returning its top-k ids in order."""
    index_emb = torch.from_numpy(index)  # (N, D), as Predictor.index_emb (shares the memory)
    q_torch = [torch.from_numpy(q[None, :]) for q in queries]  # (1, D) each, as encode_text returns

    def project(i: int) -> np.ndarray:
        return rank(index_emb, q_torch[i], k).indices[0].numpy()  # Predictor.search's ranking

    def numpy_topk(i: int) -> np.ndarray:
        scores = index @ queries[i]  # (N,)
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    fns = {"project": project, "numpy": numpy_topk}
    if with_faiss:
        flat = build_faiss_flat(index)
        fns["faiss-flat"] = lambda i: flat.search(queries[i : i + 1], k)[1][0]
    return fns


def build_faiss_flat(index: np.ndarray) -> Any:
    import faiss

    flat = faiss.IndexFlatIP(index.shape[1])
    flat.add(index)
    return flat


@dataclass
class Ann:
    """An ANN index kind: how to build it, the search-time knob swept, and how to query it."""

    knob: str
    build: Callable[[np.ndarray, argparse.Namespace], Any]
    set_knob: Callable[[Any, int], None]
    query: Callable[[Any, np.ndarray, int], np.ndarray]  # (index, (D,) query, k) -> (k,) ids


def _faiss_hnsw(x: np.ndarray, args: argparse.Namespace) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    index.add(x)
    return index


def _faiss_ivf(x: np.ndarray, args: argparse.Namespace) -> Any:
    import faiss

    nlist = max(1, int(4 * math.sqrt(len(x))))
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(args.seed).choice(len(x), min(len(x), 50 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    return index


def _hnswlib(x: np.ndarray, args: argparse.Namespace) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), ef_construction=args.ef_construction, M=args.hnsw_m, random_seed=args.seed)
    index.set_num_threads(args.threads)
    index.add_items(x, np.arange(len(x)))
    return index


def _efsearch(index: Any, ef: int) -> None:
    index.hnsw.efSearch = ef


def _nprobe(index: Any, n: int) -> None:
    index.nprobe = n


ANN_KINDS = {
    "faiss-hnsw": Ann("efSearch", _faiss_hnsw, _efsearch, lambda ix, q, k: ix.search(q[None, :], k)[1][0]),
    "faiss-ivf": Ann("nprobe", _faiss_ivf, _nprobe, lambda ix, q, k: ix.search(q[None, :], k)[1][0]),
    "hnswlib": Ann("ef", _hnswlib, lambda ix, ef: ix.set_ef(ef), lambda ix, q, k: ix.knn_query(q, k)[0][0]),
}


def measure_ann(name: str, index: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                args: argparse.Namespace) -> list[dict]:
    """Builds one ANN index, then times it at each value of its knob; one row per value."""
    kind = ANN_KINDS[name]
    t0 = time.perf_counter()
    built = kind.build(index, args)
    build_s = round(time.perf_counter() - t0, 2)
    log(f"  {name}: built in {build_s} s")
    rows = []
    for value in (args.nprobe if kind.knob == "nprobe" else [max(ef, args.k) for ef in args.ef_search]):
        kind.set_knob(built, value)
        with timed(args.idle_wait) as t:
            ms, found = blocks({name: lambda i: kind.query(built, queries[i], args.k)}, len(queries), args.warmup,
                               1)
        rows.append({"method": name, kind.knob: value, "build_s": build_s, **stats(ms[name]),
                     f"recall_at_{args.k}": recall(found[name], exact), "others_cores": round(t.others, 2)})
        log(f"  {rows[-1]}")
    return rows


def search_predictor(index: np.ndarray, args: argparse.Namespace) -> Any:
    """A `Predictor` holding the demo encoder (random weights) and `index`, its fields set without a bundle."""
    from mmcore.config import load_config
    from mmcore.inference import Predictor
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.text.tokenizer import TextTokenizer

    cfg = load_config("demo")
    tokenizer = TextTokenizer.train(captions(2000, args.seed))
    torch.manual_seed(args.seed)
    predictor = Predictor.__new__(Predictor)
    predictor.device, predictor.tokenizer = torch.device("cpu"), tokenizer
    predictor.meta = {"max_text_len": cfg.encoder.max_text_len}
    predictor.encoder = build_dual_encoder(cfg.encoder, tokenizer.vocab_size).eval()
    predictor.index_ids = predictor.index_paths = [str(i) for i in range(len(index))]
    predictor.index_emb = torch.from_numpy(index)
    return predictor


def measure_search(index: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Whole `Predictor.search` calls on demo-like captions, and their text encoding alone."""
    from mmcore.training.loop import pad_batch

    predictor = search_predictor(index, args)
    texts = captions(args.warmup + args.queries, args.seed + 2)
    max_len = predictor.meta["max_text_len"]

    @torch.no_grad()
    def encode(i: int) -> np.ndarray:
        return predictor.encoder.encode_text(pad_batch(predictor.tokenizer.encode([texts[i]], max_len)))[0].numpy()

    fns = {"search": lambda i: np.array([int(m.sample_id) for m in predictor.search([texts[i]], args.k)[0]]),
           "encode": encode}
    with timed(args.idle_wait) as t:
        ms, _ = blocks(fns, len(texts), args.warmup, args.rounds)
    return [{"method": name, **stats(ms[name]), "others_cores": round(t.others, 2)} for name in fns]


def measure_size(n: int, args: argparse.Namespace) -> dict:
    """Every method on an index of n vectors."""
    index = unit_vectors(n, args.dim, args.seed)
    queries = unit_vectors(args.warmup + args.queries, args.dim, args.seed + 1)
    log(f"n={n}: index {index.nbytes / 2**20:.0f} MB")
    with timed(args.idle_wait) as t:
        fns = exact_fns(index, queries, args.k, "faiss-flat" in args.ann)
        ms, ids = blocks(fns, len(queries), args.warmup, args.rounds)
    del fns
    gc.collect()
    exact = ids["numpy"]
    rows = [{"method": name, **stats(ms[name]), f"same_top{args.k}_as_numpy": recall(ids[name], exact),
             "others_cores": round(t.others, 2)} for name in ms]
    for row in rows:
        log(f"  {row}")
    if not args.no_search:
        rows += measure_search(index, args)
        log(f"  {rows[-2:]}")
    for name in args.ann:
        if name != "faiss-flat":
            rows += measure_ann(name, index, queries, exact, args)
    project = next(r for r in rows if r["method"] == "project")
    return {"n": n, "index_mb": round(index.nbytes / 2**20, 1), "rows": rows,
            "project_p50_over_50ms": project["p50_ms"] > 50.0}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"torch": torch.__version__}
    for dist in ("faiss-cpu", "hnswlib", "threadpoolctl"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=0, help="embedding size (0: the demo preset's encoder.embed_dim)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="timed queries per method")
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries first")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of blocks of the methods compared")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ann", nargs="*", default=list(ANNS), help=f"some of {', '.join(ANNS)} (none: no ANN)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--no-search", action="store_true", help="leave out the whole Predictor.search calls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-wait", type=float, default=30.0, help="at most this many s waiting for a quiet machine")
    parser.add_argument("--smoke", action="store_true", help="mark the results file as a smoke run")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "search_latency.json"))
    args = parser.parse_args()
    unknown = [a for a in args.ann if a not in ANNS and a != "none"]
    if unknown:
        parser.error(f"unknown --ann {unknown}; choose from {', '.join(ANNS)} or none")
    args.ann = [a for a in args.ann if a != "none"]
    if args.k >= min(args.sizes):
        parser.error(f"--k {args.k} must be below the smallest size {min(args.sizes)}")
    return args


def main() -> None:
    start, args = time.perf_counter(), parse_args()
    if not args.dim:
        from mmcore.config import load_config

        args.dim = load_config("demo").encoder.embed_dim
    torch.set_num_threads(args.threads)
    if args.ann:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    res = {**header("bench.search_latency", versions()), "smoke": args.smoke,
           "settings": {k: v for k, v in vars(args).items() if k not in ("out", "smoke")}, "sizes": []}
    with threadpool_limits(args.threads):  # numpy's OpenBLAS, torch's and faiss's OpenMP
        for n in args.sizes:
            res["sizes"].append(measure_size(n, args))
            gc.collect()
    write_results(res, start, Path(args.out))
    log(f"written to {args.out}")


if __name__ == "__main__":
    main()
