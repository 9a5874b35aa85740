"""Serving latency: the registered model answering over HTTP (`mlflow models serve`) against the same model
called in process, side by side in one run.

Method:
  1. A model: the pipeline on the `smoke` preset (`mm pipeline --preset smoke`) on synthetic images, in a
     temporary data root with a temporary MM_HOME (so its own SQLite MLflow store), then
     `models:/mmcore-smoke@champion`; or an existing model with --model-uri (and --tracking-uri).
  2. The model's files are downloaded once; in this process the bundle is loaded by
     `mmcore.serving.load_predictor` (direct), and the MLflow model by `mlflow.pyfunc.load_model`.
  3. `mlflow models serve -m <model uri> --env-manager local` is started on 127.0.0.1 on a free port, with the
     venv's bin folder first on PATH (it runs `uvicorn` from there).
  4. Latency, one request (one row) at a time, per task the model answers, through four layers, in blocks
     of requests per layer, in rounds whose layer order alternates (`schedule`):
       direct  `answer_requests(predictor, DataFrame, params)`: the model's own work;
       pyfunc  `PyFuncModel.predict(DataFrame, params)`: + MLflow's schema enforcement and the wrapper that
               checks the request as sent (mmcore/pyfunc_model.py);
       scoring the scoring server's `invocations(json, ...)` in this process: + parsing the JSON body into a
               DataFrame and writing the answer as JSON;
       served  an HTTP POST to the server (a kept-alive connection): + HTTP, uvicorn, the hop to a worker
               thread, and another process.
     Every call builds its request as a client would (the DataFrame, or the JSON body) inside the timing.
     The answers of every layer are compared with direct's (generate is seeded, so it is repeatable).
  5. Throughput: a mix of all tasks sent by 1 client, then by --clients threads (`requests`, one session
     each), to the same server; every response must be a 200.
The load of the machine (/proc/loadavg, and the other processes' CPU during each phase) is recorded.

Run (4 to 7 minutes on 2 shared cores: 2.5 for the smoke pipeline, most of the rest waiting for a quiet machine):
    .venv/bin/python -m bench.serving --out bench/results/serving.json
An existing model:
    .venv/bin/python -m bench.serving --model-uri models:/mmcore-shapes@champion --tracking-uri sqlite:///.mm/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.machine import header, log, timed, write_results
from bench.serving_server import ROOT, model_server, smoke_model

LAYERS = ("direct", "pyfunc", "scoring", "served")
# generate is seeded so that every layer does the same work and gives the same text; k is the default's
TASK_PARAMS: dict[str, dict[str, Any]] = {"search": {"k": 5}, "generate": {"seed": 0}}
JSON = {"Content-Type": "application/json"}


# --- the numbers (pure) ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the two nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be from 0 to 100; got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of latencies in seconds, as milliseconds."""
    return {"n": len(seconds), "p50_ms": round(1000 * percentile(seconds, 50), 3),
            "p95_ms": round(1000 * percentile(seconds, 95), 3),
            "mean_ms": round(1000 * sum(seconds) / len(seconds), 3)}


def ratio(a: float, b: float) -> float:
    """a / b, rounded; NaN when b is 0 (nothing to compare with)."""
    return round(a / b, 2) if b else float("nan")


def schedule(n: int, rounds: int, layers: Sequence[str]) -> list[tuple[str, list[int]]]:
    """(layer, request indices) blocks: `rounds` rounds, each sending every layer its share of the `n`
    requests in one block, the layers in order in even rounds and reversed in odd ones.

    Blocks, because a call's time depends on what ran just before it on the same cores: when the layers
    took turns request by request, direct (always right after served) measured up to 5x slower than
    pyfunc, which does the same work. Alternating, so that a drift of the machine's load over the run
    reaches every layer alike.
    """
    rounds = max(1, min(rounds, n))
    return [(layer, list(range(r, n, rounds))) for r in range(rounds)
            for layer in (layers if r % 2 == 0 else layers[::-1])]


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two answer rows agree: equal answer and matches, scores equal within 1e-6 (a missing score is NaN)."""
    score = [float("nan") if x.get("score") is None else float(x["score"]) for x in (a, b)]
    scores_equal = (math.isnan(score[0]) and math.isnan(score[1])) or math.isclose(*score, abs_tol=1e-6)
    return a.get("answer") == b.get("answer") and a.get("matches") == b.get("matches") and scores_equal


def markdown(res: dict) -> str:
    """The latency table, the layer breakdown and the throughput table, as printed and as BENCHMARKS.md shows."""
    lat = res["latency"]
    rows = ["| task | served p50 (ms) | served p95 (ms) | direct p50 (ms) | direct p95 (ms) | served / direct "
            "(p50) | served / direct (p95) | answers equal | others' load (cores) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for task, t in lat.items():
        s, d = t["served"], t["direct"]
        equal = "yes" if all(n == 0 for n in t["mismatches"].values()) else \
            ", ".join(f"{k}: {n} differ" for k, n in t["mismatches"].items() if n)
        rows.append(f"| {task} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {d['p50_ms']:.1f} | {d['p95_ms']:.1f} | "
                    f"{t['ratio_p50']:.2f} | {t['ratio_p95']:.2f} | {equal} | {t['others_cores']:.2f} |")
    rows += ["", "| task | " + " | ".join(f"{x} p50 (ms)" for x in LAYERS) + " |", "|---|" + "---:|" * len(LAYERS)]
    for task, t in lat.items():
        rows.append(f"| {task} | " + " | ".join(f"{t[x]['p50_ms']:.1f}" for x in LAYERS) + " |")
    rows += ["", "| clients | requests | answered 200 | seconds | requests/s | p50 (ms) | p95 (ms) | others' load "
             "(cores) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res["throughput"]:
        rows.append(f"| {c['clients']} | {c['requests']} | {c['ok']} | {c['seconds']:.2f} | "
                    f"{c['requests_per_s']:.1f} | {c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['others_cores']:.2f} |")
    if "loadavg" in res:
        rows += ["", f"load average (1, 5, 15 min) before: {', '.join(map(str, res['loadavg']['before']))}; "
                     f"after: {', '.join(map(str, res['loadavg']['after']))}"]
    return "\n".join(rows)


# --- requests -------------------------------------------------------------------------------------------


def request_rows(raw: Path, tasks: Sequence[str], langs: Sequence[str], count: int) -> dict[str, list[dict]]:
    """`count` one-row requests per task from a synthetic dataset's images, captions and questions."""
    import base64

    records = [json.loads(line) for line in (raw / "annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    images = [base64.b64encode((raw / r["image"]).read_bytes()).decode() for r in records]
    captions = [r["captions"]["en"][0] for r in records]
    questions = [r["qa"][0]["question"] for r in records]
    to_lang = "zh" if "zh" in langs else langs[0]
    make = {
        "caption": lambda i: {"task": "caption", "image": images[i]},
        "ask": lambda i: {"task": "ask", "image": images[i], "question": questions[i]},
        "search": lambda i: {"task": "search", "text": captions[i]},
        "translate": lambda i: {"task": "translate", "text": captions[i], "lang": to_lang},
        "generate": lambda i: {"task": "generate", "text": " ".join(captions[i].split()[:2]), "lang": langs[0]},
    }
    return {task: [make[task](i % len(records)) for i in range(count)] for task in tasks}


def body(row: dict, params: dict) -> bytes:
    """The JSON body of a one-row request: the columns it uses, in `dataframe_split` form, and its params."""
    split = {"columns": list(row), "data": [list(row.values())]}
    return json.dumps({"dataframe_split": split, **({"params": params} if params else {})}).encode()


# --- measurements ---------------------------------------------------------------------------------------


Caller = Callable[[dict, dict], dict]  # (request row, params) -> the answer row


def callers(predictor: Any, pyfunc: Any, url: str) -> dict[str, Caller]:
    """One function per layer (LAYERS), each building its request as its client would."""
    import pandas as pd
    import requests
    from mlflow.pyfunc.scoring_server import invocations

    from mmcore.serving import answer_requests

    schema = pyfunc.metadata.get_input_schema()
    session = requests.Session()

    def direct(row: dict, params: dict) -> dict:
        return answer_requests(predictor, pd.DataFrame([row]), params).to_dict("records")[0]

    def in_pyfunc(row: dict, params: dict) -> dict:
        return pyfunc.predict(pd.DataFrame([row]), params=params).to_dict("records")[0]

    def scoring(row: dict, params: dict) -> dict:
        out = invocations(body(row, params), "application/json", pyfunc, schema)
        if out.status != 200:
            raise RuntimeError(f"scoring answered {out.status}: {out.response[:300]}")
        return json.loads(out.response)["predictions"][0]

    def served(row: dict, params: dict) -> dict:
        resp = session.post(f"{url}/invocations", data=body(row, params), headers=JSON, timeout=120)
        if resp.status_code != 200:
            raise RuntimeError(f"server answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["predictions"][0]

    return {"direct": direct, "pyfunc": in_pyfunc, "scoring": scoring, "served": served}


def latency(call: dict[str, Caller], rows: dict[str, list[dict]], warmup: int, rounds: int,
            idle_wait: float) -> dict[str, dict]:
    """Per task: each layer's latency summary, served / direct ratios, answers that differ from direct's, and
    the other processes' load meanwhile.

    Each task first waits (at most `idle_wait` s) for a quiet machine. The first `warmup` rows of each task
    go through every layer untimed; the rest are timed in `rounds` rounds of blocks (`schedule`), each
    block led by one untimed call.
    """
    out = {}
    for task, task_rows in rows.items():
        params, timed_rows = TASK_PARAMS.get(task, {}), task_rows[warmup:]
        seconds: dict[str, list[float]] = {x: [] for x in LAYERS}
        answers: dict[str, dict[int, dict]] = {x: {} for x in LAYERS}
        with timed(idle_wait, pool=True) as load:  # the server is a child: its CPU is not the others'
            for row in task_rows[:warmup]:  # first-call costs (allocator, thread pools, lazy imports)
                for layer in LAYERS:
                    call[layer](row, params)
            for layer, block in schedule(len(timed_rows), rounds, LAYERS):
                call[layer](timed_rows[block[0]], params)  # what ran just before is not timed
                for i in block:
                    t0 = time.perf_counter()
                    answers[layer][i] = call[layer](timed_rows[i], params)
                    seconds[layer].append(time.perf_counter() - t0)
        mismatches = {x: sum(not same_answer(answers[x][i], a) for i, a in answers["direct"].items())
                      for x in LAYERS[1:]}
        stats = {x: summary(s) for x, s in seconds.items()}
        out[task] = {**stats, "ratio_p50": ratio(stats["served"]["p50_ms"], stats["direct"]["p50_ms"]),
                     "ratio_p95": ratio(stats["served"]["p95_ms"], stats["direct"]["p95_ms"]),
                     "mismatches": mismatches, "others_cores": round(load.others, 2)}
        log(f"{task}: served p50 {stats['served']['p50_ms']:.1f} ms, direct p50 {stats['direct']['p50_ms']:.1f} ms "
            f"(other processes: {load.others:.2f} cores)")
    return out


def throughput(url: str, bodies: list[bytes], clients: int) -> dict:
    """`bodies` sent by `clients` threads (one session each) as fast as answered; statuses and latencies."""
    import requests

    lock, next_index = threading.Lock(), iter(range(len(bodies)))
    results: list[tuple[int, float]] = []
    start = threading.Barrier(clients + 1)

    def client() -> None:
        session, mine = requests.Session(), []
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                status = session.post(f"{url}/invocations", data=bodies[i], headers=JSON, timeout=300).status_code
            except requests.RequestException:
                status = 0  # no answer at all
            mine.append((status, time.perf_counter() - t0))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    statuses = Counter(s for s, _ in results)
    return {"clients": clients, "requests": len(bodies), "ok": statuses.get(200, 0),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": round(wall, 3),
            "requests_per_s": round(len(results) / wall, 2),
            **{k: v for k, v in summary([s for _, s in results]).items() if k != "n"}}


def loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


# --- main -------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="an existing model (default: train the smoke preset into a temporary "
                                            "folder and serve models:/mmcore-smoke@champion)")
    parser.add_argument("--tracking-uri", help="MLflow store of --model-uri (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--images", type=int, default=90, help="synthetic images to train on and to send")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per task and layer")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per task and layer first")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of blocks the timed requests are split into")
    parser.add_argument("--concurrent-requests", type=int, default=200, help="requests of the throughput runs")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (a 1-client run comes first)")
    parser.add_argument("--server-workers", type=int, help="uvicorn workers of the server (default: MLflow's)")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait for a quiet machine before each task and each throughput run")
    parser.add_argument("--work", help="folder for the model, data and logs (default: a new temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"), help="results (JSON)")
    args = parser.parse_args()
    for name in ("images", "requests", "rounds", "concurrent_requests", "clients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.model_uri and not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        parser.error("--model-uri needs --tracking-uri or MLFLOW_TRACKING_URI")
    return args


def served_and_direct(args: argparse.Namespace, model_uri: str, tracking_uri: str, local: Path, raw: Path | None,
                      work: Path) -> tuple[dict, list[dict], dict]:
    """Latency per task through every layer, and throughput with 1 and --clients clients; and the server."""
    import mlflow

    from mmcore.serving import Contract, load_predictor

    predictor = load_predictor(local / "artifacts" / "bundle")
    pyfunc = mlflow.pyfunc.load_model(str(local))
    contract = Contract.of(predictor)
    if raw is None:  # an existing model: requests from synthetic images of its size
        from mmcore.data.synth import generate_shapes

        raw = work / "requests"
        generate_shapes(raw, args.images, seed=0, image_size=max(32, predictor.meta["image_size"]))
    rows = request_rows(raw, contract.tasks, contract.langs, args.warmup + args.requests)
    with model_server(model_uri, tracking_uri, work / "serve.log", args.server_workers) as server:
        log(f"server answered /ping after {server['startup_s']} s ({server['processes']} processes)")
        call = callers(predictor, pyfunc, server["url"])
        lat = latency(call, rows, args.warmup, args.rounds, args.idle_wait)
        tasks = list(rows)  # the mix: the tasks in turn, each with its next request
        mix = [body(rows[tasks[i % len(tasks)]][(i // len(tasks)) % len(rows[tasks[0]])],
                    TASK_PARAMS.get(tasks[i % len(tasks)], {})) for i in range(args.concurrent_requests)]
        runs = []
        for clients in dict.fromkeys([1, args.clients]):
            with timed(args.idle_wait, pool=True) as load:
                runs.append(throughput(server["url"], mix, clients))
            runs[-1]["others_cores"] = round(load.others, 2)
            log(f"{clients} client(s): {runs[-1]['requests_per_s']} requests/s, {runs[-1]['ok']} answered 200")
    return lat, runs, server


def main() -> None:
    args = parse_args()
    start, load_before = time.perf_counter(), loadavg()
    sys.path.insert(0, str(ROOT))
    work = Path(args.work or tempfile.mkdtemp(prefix="mm-bench-serving-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.model_uri:
        tracking_uri, model_uri, raw = args.tracking_uri or os.environ["MLFLOW_TRACKING_URI"], args.model_uri, None
    else:
        tracking_uri, raw = smoke_model(work, args.images)
        model_uri = "models:/mmcore-smoke@champion"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import mlflow
    import torch

    from mmcore.catalog import BundleDir
    from mmcore.io import read_json

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(work / "model")))
    lat, runs, server = served_and_direct(args, model_uri, tracking_uri, local, raw, work)
    meta = read_json(BundleDir(local / "artifacts" / "bundle").meta)
    versions = {name: version(name) for name in ("torch", "mlflow", "pandas", "requests", "uvicorn")}
    res = {**header("bench.serving", versions),
           "loadavg": {"before": load_before, "after": loadavg()},
           "settings": {"model_uri": model_uri, "tracking_uri": tracking_uri, "requests_per_task": args.requests,
                        "warmup": args.warmup, "rounds": args.rounds, "concurrent_requests": args.concurrent_requests,
                        "clients": args.clients, "server_workers": args.server_workers or "MLflow's default",
                        "server_processes": server["processes"], "torch_threads": torch.get_num_threads(),
                        "task_params": TASK_PARAMS,
                        "model_meta": {k: v for k, v in meta.items() if not isinstance(v, dict)}},
           "server": {"command": server["command"], "ran": server["ran"], "startup_s": server["startup_s"]},
           "latency": lat, "throughput": runs, "work": str(work)}
    print(markdown(res), flush=True)
    write_results(res, start, Path(args.out))
    log(f"results: {args.out}; model, data and logs: {work}")


if __name__ == "__main__":
    main()
