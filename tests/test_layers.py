"""The layers read top-down: CLI -> flow -> task -> stage function -> library, never back up.

    flows/          may import tasks/, mmcore/, Prefect, MLflow
    tasks/          may import mmcore/, Prefect, MLflow; not flows/
    mmcore/stages/  may import the rest of mmcore; not tasks/, flows/, Prefect or MLflow
    mmcore/ (rest)  imports neither mmcore.stages, tasks/, flows/, Prefect nor MLflow; the one exception
                    is mmcore/pyfunc_model.py, the registered model's entry point, which MLflow loads

Checked on the sources (every import statement, including those inside functions), so an import that
only runs on some path cannot slip through; and the files stay small enough to read in one sitting.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _top(name: str) -> str:
    parts = name.split(".")
    return "mmcore.stages" if parts[:2] == ["mmcore", "stages"] else parts[0]


FORBIDDEN = {
    "flows": set(),
    "tasks": {"flows"},
    "mmcore.stages": {"tasks", "flows", "prefect", "mlflow"},
    "mmcore": {"mmcore.stages", "tasks", "flows", "prefect", "mlflow"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return "mmcore.stages" if rel[:2] == ("mmcore", "stages") else rel[0]


def test_no_layer_imports_one_above_it():
    wrong = []
    for package in ("mmcore", "tasks", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            layer = _layer(path)
            allowed_mlflow = path == ROOT / "mmcore" / "pyfunc_model.py"
            for name in _imports(path):
                top = _top(name)
                if top in FORBIDDEN[layer] and not (allowed_mlflow and top == "mlflow"):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def test_the_library_loads_without_prefect_or_mlflow_and_the_model_without_prefect():
    code = ("import pkgutil, importlib, sys, mmcore\n"
            "for m in pkgutil.walk_packages(mmcore.__path__, 'mmcore.'):\n"
            "    if m.name != 'mmcore.pyfunc_model': importlib.import_module(m.name)\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'prefect', 'mlflow', 'tasks', 'flows'}))\n"
            "import mmcore.pyfunc_model\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'prefect', 'tasks', 'flows'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


def test_a_stage_flow_loads_without_torch_or_mlflow():
    """Loading a stage flow (a stage command, a deployment's worker) imports Prefect and the config only: the flow
    run begins before the stage's code is imported (flows/common.py)."""
    flows = ["ingest", "pretrain", "extract", "train", "evaluate", "pipeline"]
    code = ("import importlib, sys\n"
            f"for name in {flows!r}: importlib.import_module('flows.' + name)\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'mlflow', 'tasks', 'pyarrow'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_files_and_functions_stay_small():
    big = []
    for package in ("mmcore", "tasks", "flows", "bench", "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if len(text.splitlines()) > MAX_FILE_LINES:
                big.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        big.append(f"{path.relative_to(ROOT)}: {node.name}() {lines} lines")
    assert big == []


NAMES = ("samples-", "tokens-", "rejects-", "features-", "manifest.json", "encoder.pt", "heads.pt", "checkpoint.pt",
         "tokenizer.json", "index.parquet", "bundle.json", "launch.json")
EXTERNAL = {("mmcore/models/minilm.py", "tokenizer.json")}  # a file of the MiniLM package's own layout


def test_data_file_names_are_spelled_only_in_the_catalog():
    spelled = []
    for package in ("mmcore", "tasks", "flows", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "mmcore/catalog.py":
                continue
            text = path.read_text(encoding="utf-8")
            spelled += [f"{rel}: {name}" for name in NAMES if name in text and (rel, name) not in EXTERNAL]
    assert spelled == []
