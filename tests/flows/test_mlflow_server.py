"""The pipeline against a real MLflow tracking server whose artifacts live in S3, and the champion it
registers served over HTTP; all on 127.0.0.1.

One tiny pipeline run (module-scoped) against `mlflow server --artifacts-destination s3://...` backed
by a moto S3 server. The client (this process) has no S3 credentials: artifacts go through the
server's proxy. Then `mlflow models serve` loads `models:/mmcore-smoke@champion` through the same
server, answers good requests, and refuses a battery of malformed ones (with the serving limits the run
registered the model with) by a 4xx and one line, without a stack trace, staying up for the next request;
bench/screenshot_mlflow.py takes a picture of the runs from the server's SQLite store.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.servers import AWS_VARS, aws_vars, free_port, moto_server, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
BUCKET = "mm-mlflow"
MODEL = "mmcore-smoke"
STAGES = ["evaluate", "extract", "ingest", "pretrain", "train"]
CLIENT_ONLY = (*AWS_VARS, "MLFLOW_S3_ENDPOINT_URL")  # none of these reach the client: it has no S3 access
# the registered model's limits (the rest are the defaults: 1,000 characters of text from ingest, k up to 100)
SERVING = {"serving.max_rows": 8, "serving.max_image_bytes": 100_000, "serving.max_image_pixels": 1_000_000}


def _without_s3(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in CLIENT_ONLY}


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """moto with an empty bucket, and `mlflow server` storing artifacts in it (proxied to clients)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        port = free_port()
        db = tmp / "mlflow.db"
        env = {**_without_s3(dict(os.environ)), **aws_vars(endpoint), "MLFLOW_S3_ENDPOINT_URL": endpoint}
        cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
        with serving(cmd, f"http://127.0.0.1:{port}/health", tmp / "server.log", env=env, timeout=180,
                     cwd=tmp) as proc:
            print(f"\nmlflow server healthy after {proc.startup_s:.1f} s")
            yield {"url": f"http://127.0.0.1:{port}", "db": db, "s3": s3}


@pytest.fixture(scope="module")
def run(harness, tracking_server: dict, tmp_path_factory: pytest.TempPathFactory):
    """One tiny pipeline run tracked on the server; the module's tests see MLFLOW_TRACKING_URI pointing at it."""
    from flows.pipeline import pipeline_flow
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes

    data_root = tmp_path_factory.mktemp("server-data")
    generate_shapes(data_root / "raw" / "smoke", 60, seed=4, image_size=32)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLIENT_ONLY:
            mp.delenv(var, raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_server["url"])  # MM_ARTIFACT_ROOT stays set: ignored over http
        started = time.monotonic()
        result = pipeline_flow(load_config("smoke", {"data_root": str(data_root), "pretrain.epochs": 1,
                                                     "heads.epochs": 1, **SERVING}))
        print(f"\npipeline against the server: {time.monotonic() - started:.1f} s")
        yield {**tracking_server, "result": result, "data_root": data_root}


def _client(run: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=run["url"])


def test_parent_and_stage_runs_with_metrics_are_on_the_server(run: dict):
    client = _client(run)
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's proxy, not a local folder
    parent = client.get_run(run["result"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "pipeline"
    assert "t2i_r1" in parent.data.metrics and "vqa_acc" in parent.data.metrics
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["stage"] for r in children) == STAGES
    for child in children:
        assert child.info.status == "FINISHED" and child.data.metrics, child.data.tags["stage"]
        assert child.data.params["pretrain.epochs"] == "1"
    pretrain = next(r for r in children if r.data.tags["stage"] == "pretrain")
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "train_loss")] == [0]


def test_champion_alias_resolves_on_the_server(run: dict):
    version = _client(run).get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == run["result"]["model"]["version"]
    assert version.status == "READY"


def _bucket_keys(run: dict, prefix: str) -> set[str]:
    pages = run["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_model_and_checkpoint_artifacts_are_objects_in_the_bucket(run: dict):
    client = _client(run)
    version = client.get_model_version_by_alias(MODEL, "champion")
    location = version.source  # models:/<model id> for a logged model (MLflow 3), else an artifact URI
    if location.startswith("models:/"):
        location = client.get_logged_model(location.removeprefix("models:/")).artifact_location
    assert location.startswith("mlflow-artifacts:/")
    prefix = "mlflow/" + location.removeprefix("mlflow-artifacts:/").strip("/")
    keys = _bucket_keys(run, prefix)
    names = {k.removeprefix(prefix + "/") for k in keys}
    assert {"MLmodel", "requirements.txt", "input_example.json", "pyfunc_model.py"} <= names, sorted(names)
    assert {"artifacts/bundle/encoder.pt", "artifacts/bundle/heads.pt"} <= names, sorted(names)

    exp = client.get_experiment_by_name("smoke")
    pretrain = client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")[0]
    assert f"mlflow/{exp.experiment_id}/{pretrain.info.run_id}/artifacts/checkpoints/encoder.pt" in \
        _bucket_keys(run, f"mlflow/{exp.experiment_id}/{pretrain.info.run_id}/")


def test_champion_loads_through_the_server_and_answers_search(run: dict):
    import mlflow.pyfunc
    import pandas as pd

    assert not any(var in os.environ for var in CLIENT_ONLY)  # artifacts come through the server
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(pd.DataFrame([{"task": "search", "text": "a small red circle"}]), params={"k": 4})
    matches = json.loads(out["matches"][0])
    assert len(matches) == 4 and out["answer"][0] == matches[0]["image_path"]
    assert (run["data_root"] / "raw" / "smoke" / matches[0]["image_path"]).is_file()


# Serving over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(run: dict, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow models serve` for the champion, fetched through the tracking server; yields its URL."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    # `mlflow models serve` execs `uvicorn` from PATH: the venv's bin folder must be on it (as when activated).
    env = {**_without_s3(dict(os.environ)), "MLFLOW_TRACKING_URI": run["url"],
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [MLFLOW, "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, f"http://127.0.0.1:{port}/ping", tmp / "serve.log", env=env, timeout=240, cwd=ROOT) as proc:
        print(f"\nmlflow models serve answered /ping after {proc.startup_s:.1f} s")
        yield f"http://127.0.0.1:{port}"


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _invoke(url: str, rows: list[dict], params: dict | None = None) -> tuple[int, dict]:
    columns = ["task", "image", "question", "text", "lang"]
    body = {"dataframe_split": {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}}
    if params:
        body["params"] = params
    return _post(url, body)


def test_served_champion_answers_caption_ask_and_search(run: dict, served: str):
    image = base64.b64encode((run["data_root"] / "raw/smoke/images/000000.png").read_bytes()).decode()
    status, body = _invoke(served, [
        {"task": "caption", "image": image},
        {"task": "ask", "image": image, "question": "how many shapes are there?"},
        {"task": "search", "text": "a large blue square"},
    ], params={"k": 3})
    assert status == 200, body
    caption, ask, search = body["predictions"]
    records = [json.loads(line) for line in
               (run["data_root"] / "raw/smoke/annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    words = {w for r in records for c in r["captions"]["en"] for w in re.findall(r"[a-z]+", c)}
    said = re.findall(r"[a-z]+", caption["answer"])
    assert said and set(said) <= words  # made of the words of the captions it learned from
    answers = {qa["answer"] for r in records for qa in r["qa"]}
    assert ask["answer"] in answers and 0.0 < ask["score"] <= 1.0  # one of the answers it was trained on
    matches = json.loads(search["matches"])
    assert len(matches) == 3 and search["answer"] == matches[0]["image_path"]
    assert all(m["image_path"].startswith("images/") for m in matches)


def test_served_champion_rejects_an_unknown_task_by_name(served: str):
    status, body = _invoke(served, [{"task": "summarize", "text": "two shapes"}])
    assert status == 400, body  # a client error, whose message says what was wrong
    assert _refusal(status, body) == ("request 0: unknown task 'summarize'; choose from caption, ask, search, "
                                      "translate, generate")


def _refusal(status: int, body: dict) -> str:
    """The one line a bad request is answered with (MLflow puts a repr of the input data before it)."""
    assert 400 <= status < 500, (status, body)
    assert "stack_trace" not in body and "Traceback" not in json.dumps(body), body
    assert len(body["message"]) < 3000, body["message"][:3000]  # a short repr of the input, however big it is
    prefix, sep, line = body["message"].rpartition("\nError: ")
    assert sep and prefix.startswith("Failed to predict data") and "\n" not in line and len(line) <= 300, body
    return line


def _png(size: tuple[int, int], mode: str = "L", noise: bool = False) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8) if noise \
        else np.zeros((size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def _battery(image: str) -> list[tuple[str, dict, str]]:
    """(what, request body, the start of the one line it must be refused with)."""
    from tests.mmcore.test_serving import png_header

    def rows(*items: dict, params: dict | None = None, columns: tuple[str, ...] = ("task", "image", "question",
                                                                                   "text", "lang")) -> dict:
        body = {"dataframe_split": {"columns": list(columns), "data": [[r.get(c) for c in columns] for r in items]}}
        return {**body, "params": params} if params else body

    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    noise, blank = _png((200, 200), "RGB", noise=True), _png((2000, 2000))
    assert len(noise) > 100_000 and len(blank) < 20_000  # over the byte limit; a big blank image compressed small
    search = {"task": "search", "text": "a red circle"}
    return [
        ("20 MB text", rows({"task": "search", "text": "a " * 10_000_000}),
         "request 0: 'text' has 20000000 characters; at most 1000 allowed"),
        ("too many rows", rows(*[search] * 9), "9 requests in one call; at most 8 allowed"),
        ("image over the byte limit", rows({"task": "caption", "image": b64(noise)}),
         f"request 0: 'image' is {len(b64(noise))} characters of base64"),
        ("bomb: a tiny PNG claiming 169 MP", rows({"task": "caption", "image": b64(png_header(13_000, 13_000))}),
         "request 0: 'image' is 13000 x 13000 = 169000000 pixels; at most 1000000 allowed"),
        ("bomb: a real 2000 x 2000 blank PNG", rows({"task": "ask", "image": b64(blank), "question": "what?"}),
         "request 0: 'image' is 2000 x 2000 = 4000000 pixels; at most 1000000 allowed"),
        ("bomb past Pillow's own guard", rows({"task": "caption", "image": b64(png_header(20_000, 20_000))}),
         "request 0: 'image' claims 400000000 pixels, a decompression bomb Pillow refuses to open"),
        ("truncated image", rows(search, {"task": "caption", "image": image[:len(image) // 2 // 4 * 4]}),
         "request 1: 'image' could not be decoded ("),
        ("not an image", rows({"task": "caption", "image": b64(b"GIF89a, or so it says")}),
         "request 0: 'image' is not an image file Pillow can read"),
        ("not base64", rows({"task": "caption", "image": "%%%"}), "request 0: 'image' must be the base64 of"),
        ("k=-1", rows(search, params={"k": -1}), "param 'k' must be an integer from 1 to 100 (search results per "
                                                 "text); got -1"),
        ("k too large", rows(search, params={"k": 101}), "param 'k' must be an integer from 1 to 100"),
        ("unknown task", rows({"task": "summarize", "text": "x"}), "request 0: unknown task 'summarize'; choose from"),
        ("unknown param", rows(search, params={"kk": 3}), "unknown param(s) ['kk']; this model takes k, temperature,"),
        ("a list where a string is declared", rows({"task": "search", "text": ["a", "b"]}),
         "request 0: 'text' must be a string or null; got list ['a', 'b']"),
        ("missing required column", rows({"text": "x"}, columns=("text",)), "requests need a 'task' column: one of"),
        ("unknown column", rows({**search, "extra": "x"}, columns=("task", "text", "extra")),
         "unknown or repeated column(s) ['extra']"),
        ("bad lang", rows({"task": "translate", "text": "a red circle", "lang": "fr"}),
         "request 0: unknown language 'fr'; this model writes en, zh"),
        ("temperature 0", rows({"task": "generate", "text": "two", "lang": "en"}, params={"temperature": 0}),
         "param 'temperature' must be a number >= 1e-06 (> 0;"),
    ]


def test_served_champion_refuses_malformed_requests_in_one_line_and_stays_up(run: dict, served: str):
    image = base64.b64encode((run["data_root"] / "raw/smoke/images/000000.png").read_bytes()).decode()
    good = [{"task": "search", "text": "a large blue square"}, {"task": "caption", "image": image}]
    status, before = _invoke(served, good, {"k": 3})
    assert status == 200, before
    wrong = {}
    for what, body, expected in _battery(image):
        started = time.monotonic()
        status, answer = _post(served, body)
        line = _refusal(status, answer)
        if not line.startswith(expected):
            wrong[what] = line
        assert time.monotonic() - started < 30, what  # refused before any work (a 20 MB text took 20 s before)
    assert wrong == {}
    status, after = _invoke(served, good, {"k": 3})
    assert (status, after) == (200, before)  # still up, and answering as before


def test_concurrent_clients_are_all_answered_as_one_client_is(run: dict, served: str):
    """8 clients at once, good and bad requests mixed: every good one gets the answer a lone client gets, every
    bad one its 400, and the server is still up afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    image = base64.b64encode((run["data_root"] / "raw/smoke/images/000001.png").read_bytes()).decode()
    requests = [([{"task": "search", "text": "a small red circle"}], {"k": 2}),
                ([{"task": "caption", "image": image}], None),
                ([{"task": "ask", "image": image, "question": "how many shapes are there?"}], None),
                ([{"task": "summarize", "text": "x"}], None)]  # refused
    alone = [_invoke(served, rows, params) for rows, params in requests]
    assert [status for status, _ in alone] == [200, 200, 200, 400]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda i: _invoke(served, *requests[i % 4]), range(48)))
    assert together == [alone[i % 4] for i in range(48)]
    assert _invoke(served, *requests[0]) == alone[0]


# A look at the runs --------------------------------------------------------------------------------------------


def test_screenshot_script_shows_the_experiment(run: dict, tmp_path: Path):
    from PIL import Image

    from bench.screenshot_mlflow import BROWSERS

    if not any(shutil.which(b) for b in BROWSERS):
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome): apt-get install chromium")
    out = tmp_path / "runs.png"
    started = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "screenshot_mlflow.py"), "--tracking-uri",
                          f"sqlite:///{run['db']}", "--experiment", "smoke", "--out", str(out)],
                         cwd=tmp_path, env=_without_s3(dict(os.environ)), capture_output=True, text=True, timeout=300)
    print(f"\nscreenshot script: {time.monotonic() - started:.1f} s\n{res.stdout}")
    assert res.returncode == 0, res.stdout + res.stderr
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 600
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # a rendered page, not a blank single colour


def test_the_champions_version_page_shows_its_model_card_and_metrics(run: dict, tmp_path: Path):
    from PIL import Image

    from bench.screenshot_mlflow import BROWSERS

    if not any(shutil.which(b) for b in BROWSERS):
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome): apt-get install chromium")
    out, dom = tmp_path / "card.png", tmp_path / "card.html"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "screenshot_mlflow.py"), "--tracking-uri",
                          run["url"], "--model", MODEL, "--out", str(out), "--dom", str(dom)],
                         cwd=tmp_path, env=_without_s3(dict(os.environ)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800
    page = re.sub(r"<[^>]+>", " ", dom.read_text(encoding="utf-8"))  # the rendered text
    version = _client(run).get_model_version_by_alias(MODEL, "champion")
    assert f"Version {version.version}" in page
    # the card, rendered from markdown: its title, the metrics table with a baseline, and the provenance
    for shown in (MODEL, "Test metrics", "t2i_r1", f"{run['result']['metrics']['t2i_r1']:.4f}", "Provenance",
                  version.tags["dataset_digest"]):
        assert shown in page, shown


def test_served_champion_refuses_unknown_params_that_mlflow_alone_would_drop(served: str):
    """Pins how unknown params are refused: MLflow 3.17's `_enforce_params_schema` drops them with a warning
    before the model's `predict`, so mmcore/pyfunc_model.py checks them in a wrapper of `PyFuncModel.predict`.
    If an MLflow upgrade stops calling that method, this answers 200 and fails here."""
    status, body = _invoke(served, [{"task": "search", "text": "a red circle"}], {"k": 2, "temprature": 0.5})
    assert _refusal(status, body) == ("unknown param(s) ['temprature']; this model takes k, temperature, top_k, "
                                      "top_p, seed")
