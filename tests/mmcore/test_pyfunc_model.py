"""The registered model's entry point, loaded as MLflow loads it (models-from-code, in this process): bad
requests become one-line `invalid_parameter_value` errors, checked before MLflow's own schema enforcement
(so unknown params are refused, not dropped), and a failure of the model says only that it failed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mmcore.serving import Limits
from tests.mmcore.test_serving import full_bundle

LIMITS = Limits(max_rows=4, max_text_chars=50, max_image_bytes=5000, max_image_pixels=10_000, max_k=3)
SEARCH = pd.DataFrame([{"task": "search", "text": "a red circle"}])


def save_model(tiny_bundle: Path, out: Path, limits: Limits = LIMITS) -> Path:
    """The model saved as registration logs it (its code, the bundle with every head, the signature)."""
    import mlflow.pyfunc

    from tasks.register import PYFUNC_ENTRY, signature

    bundle = full_bundle(tiny_bundle, out / "parts", limits)
    mlflow.pyfunc.save_model(str(out / "model"), python_model=PYFUNC_ENTRY, artifacts={"bundle": str(bundle)},
                             signature=signature(limits))
    return out / "model"


@pytest.fixture(scope="module")
def model(tiny_bundle, tmp_path_factory):
    """The saved model, loaded by MLflow."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(save_model(tiny_bundle, tmp_path_factory.mktemp("pyfunc"))))


def _refused(model, data, params=None) -> str:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as err:
        model.predict(data, params=params)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.get_http_status_code() == 400
    assert "\n" not in err.value.message and len(err.value.message) <= 300
    return err.value.message


def test_a_good_request_is_answered(model):
    import json

    out = model.predict(SEARCH, params={"k": 2})
    assert len(out) == 1 and out["answer"][0].startswith("images/") and len(json.loads(out["matches"][0])) == 2
    assert len(json.loads(model.predict(SEARCH)["matches"][0])) == 3  # the default k is at most the model's max_k


@pytest.mark.parametrize(("data", "params", "message"), [
    (SEARCH, {"kk": 1}, "unknown param(s) ['kk']; this model takes k, temperature, top_k, top_p, seed"),
    (SEARCH, {"k": 4}, "param 'k' must be an integer from 1 to 3 (search results per text); got 4"),
    (SEARCH, {"k": "3"}, "param 'k' must be an integer from 1 to 3 (search results per text); got '3'"),
    (pd.DataFrame([{"text": "x"}]), None, "requests need a 'task' column: one of caption, ask, search, translate, "
                                          "generate"),
    (pd.DataFrame([{"task": 3}]), None, "request 0: 'task' must be a string or null; got int 3"),
    (pd.DataFrame([{"task": "search", "text": "x", "extra": "y"}]), None,
     "unknown or repeated column(s) ['extra']; requests have the columns task, image, question, text, lang, once each"),
    (pd.DataFrame([{"task": "generate", "text": "x", "lang": "fr"}]), None,
     "request 0: unknown language 'fr'; this model writes en, zh"),
])
def test_bad_requests_are_refused_before_mlflow_enforces_its_schema(model, data, params, message):
    assert _refused(model, data, params) == message  # MLflow alone: dropped, multi-line, or a stack trace


def test_a_failure_of_the_model_is_a_server_error_without_its_traceback(model, monkeypatch):
    from mlflow.exceptions import MlflowException

    def broken(texts, k):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(model.unwrap_python_model().predictor, "search", broken)
    with pytest.raises(MlflowException) as err:
        model.predict(SEARCH)
    assert err.value.get_http_status_code() == 500
    assert err.value.message == "the model failed on this request (RuntimeError); the server's log has the details"


def test_only_our_models_are_strict_and_predict_is_wrapped_once(model, tmp_path):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    assert PyFuncModel.predict.mmcore_checks_first
    assert not hasattr(PyFuncModel.predict.__wrapped__, "mmcore_checks_first")  # models loaded since: no rewrap

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [params]

    signature = ModelSignature(Schema([ColSpec("string", "x")]), params=ParamSchema([ParamSpec("k", "long", 1)]))
    mlflow.pyfunc.save_model(str(tmp_path / "echo"), python_model=Echo(), signature=signature)
    echo = mlflow.pyfunc.load_model(str(tmp_path / "echo"))
    assert echo.predict(pd.DataFrame({"x": ["a"]}), params={"k": 2, "other": 3}) == [{"k": 2}]  # MLflow's way
