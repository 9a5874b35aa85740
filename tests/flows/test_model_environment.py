"""The registered model deploys away from this checkout: a fresh virtualenv built from nothing but the model's
own requirements.txt (offline, from the machine's package sources) loads `models:/mmcore-deploy@champion`,
answers all five tasks as this process does, and `mlflow models serve` from that environment answers them over
HTTP. The environment has neither the project nor Prefect installed, and it does not run in this checkout: the
library comes from the model's own code folder."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, serving

pytestmark = pytest.mark.slow

MODEL = "models:/mmcore-deploy@champion"
NOT_FOR_LOADING = ("prefect", "ray", "dask", "pytest", "moto", "hypothesis", "ruff", "pycocoevalcap",
                   "mmcore-pipelines", "sacrebleu")
COLUMNS = ["task", "image", "question", "text", "lang"]
PARAMS = {"k": 3, "seed": 7}

# Runs in the fresh environment: loads the champion, answers the requests, says where mmcore came from and
# which of the checkout's packages were imported.
_SCRIPT = """
import importlib.util, json, sys
import pandas as pd
missing = {name: importlib.util.find_spec(name) is None for name in ("mmcore", "prefect", "tasks", "flows")}
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
request = json.loads(open(sys.argv[2]).read())
out = model.predict(pd.DataFrame(request["rows"], columns=request["columns"]), params=request["params"])
import mmcore
print(json.dumps({"missing_before_load": missing, "mmcore": mmcore.__file__,
                  "imported": sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "tasks", "flows", "ray"}),
                  "answers": out.to_dict("records")}))
"""


@pytest.fixture(scope="module")
def champion(harness, tiny_bundle, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model with all five heads registered as the pipeline registers one (`register_bundle`, which the
    evaluate flow's registration calls) and made @champion; the requests for all five tasks and this
    process's answers. Its weights are untrained: what is tested is that it loads and answers elsewhere."""
    import io

    import mlflow.pyfunc
    import pandas as pd
    from PIL import Image

    from mmcore.config import load_config
    from tasks import tracking
    from tasks.register import register_bundle
    from tests.mmcore.test_serving import full_bundle

    cfg = load_config("smoke", {}, dataset="deploy")
    bundle = full_bundle(tiny_bundle, tmp_path_factory.mktemp("env-model"), None)
    with tracking.stage_run(cfg, "evaluate") as run_id:
        model = register_bundle(cfg, bundle, {"t2i_r1": 0.3, "t2i_r1_baseline": 0.01}, run_id, "split-a", "d" * 64)
    assert f"models:/{model['name']}@{model['alias']}" == MODEL
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 30)).save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    rows = [{"task": "caption", "image": image}, {"task": "ask", "image": image, "question": "how many shapes?"},
            {"task": "search", "text": "a large blue square"}, {"task": "translate", "text": "a red circle",
                                                                 "lang": "zh"},
            {"task": "generate", "text": "a", "lang": "en"}]
    direct = mlflow.pyfunc.load_model(MODEL).predict(pd.DataFrame(rows, columns=COLUMNS), params=PARAMS)
    return {"rows": rows, "direct": direct.to_dict("records")}


@pytest.fixture(scope="module")
def fresh_env(champion: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A virtualenv with only the champion's requirements; the environment variables to run in it."""
    import mlflow.pyfunc

    tmp = tmp_path_factory.mktemp("fresh-env")
    requirements = Path(mlflow.pyfunc.get_model_dependencies(MODEL))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # --no-compile: compiling every module of torch to bytecode would more than double the install's time
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", "-r",
                          str(requirements)], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("MLFLOW_")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])  # mlflow models serve execs uvicorn
    env["PYTHONNOUSERSITE"] = "1"
    work = tmp / "work"  # not this checkout: nothing of the project is importable from the working folder
    work.mkdir()
    return {"venv": venv, "env": env, "cwd": work, "requirements": requirements.read_text().split()}


def test_requirements_are_exactly_what_loading_needs(fresh_env: dict):
    from tasks.register import LOAD_REQUIREMENTS

    names = {line.split("==")[0].lower() for line in fresh_env["requirements"]}
    assert names == set(LOAD_REQUIREMENTS)  # pinned versions of these, nothing else
    assert not names & set(NOT_FOR_LOADING)
    assert all("==" in line for line in fresh_env["requirements"])


def test_a_fresh_environment_loads_the_champion_and_answers_every_task(champion: dict, fresh_env: dict):
    script, rows = fresh_env["cwd"] / "load.py", fresh_env["cwd"] / "rows.json"
    script.write_text(_SCRIPT)
    rows.write_text(json.dumps({"rows": champion["rows"], "columns": COLUMNS, "params": PARAMS}))
    run = subprocess.run([str(fresh_env["venv"] / "bin" / "python"), str(script), MODEL, str(rows)],
                         cwd=fresh_env["cwd"], env=fresh_env["env"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["missing_before_load"] == {"mmcore": True, "prefect": True, "tasks": True, "flows": True}
    assert "/code/mmcore/" in found["mmcore"]  # the library logged with the model
    assert found["imported"] == []
    assert [r["answer"] for r in found["answers"]] == [r["answer"] for r in champion["direct"]]
    assert all(r["answer"] for r in found["answers"])


def test_mlflow_models_serve_from_the_fresh_environment_answers_over_http(champion: dict, fresh_env: dict):
    port = free_port()
    cmd = [str(fresh_env["venv"] / "bin" / "mlflow"), "models", "serve", "-m", MODEL, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, f"http://127.0.0.1:{port}/ping", fresh_env["cwd"] / "serve.log", env=fresh_env["env"],
                 timeout=300, cwd=fresh_env["cwd"]):
        body = {"dataframe_split": {"columns": COLUMNS,
                                    "data": [[row.get(c) for c in COLUMNS] for row in champion["rows"]]},
                "params": PARAMS}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status == 200
            served = json.loads(resp.read())["predictions"]
    assert [r["answer"] for r in served] == [r["answer"] for r in champion["direct"]]
    assert [r["task"] for r in champion["rows"]] == ["caption", "ask", "search", "translate", "generate"]
