"""The registered model's entry point (MLflow models-from-code): MLflow runs this file when it loads the
model, so loading never unpickles anything.

This is the one module of mmcore that imports MLflow, because MLflow itself loads it; it needs nothing
of tasks/ or flows/, and so nothing of Prefect.

Errors: a bad request (mmcore/serving.py's `BadRequest`, or any ValueError) becomes
`MlflowException.invalid_parameter_value`, which `mlflow models serve` answers with a 400 and the one-line
message; anything else becomes a 500 saying only that the model failed (the traceback goes to the
server's log). The scoring server attaches a `stack_trace` to every other exception type, so none may
escape `predict`.

Unknown params: MLflow 3.17 has no strict mode. `PyFuncModel.predict` calls `_enforce_params_schema`,
which drops params the signature does not declare with only a logged warning (mlflow PR #9252 made that a
warning on purpose) and fills in defaults, so `predict` below can never tell that a client sent one.
The ways around it, from most to least fragile:
  - catch MLflow's "Unrecognized params" log record: depends on its wording, its logger and the log level
    (raise mlflow's log level and strictness silently disappears);
  - replace `mlflow.pyfunc._enforce_params_schema`: a private name, and it would make every model in
    the process strict;
  - wrap the public `PyFuncModel.predict(data, params)`, which `mlflow models serve` and
    `mlflow.pyfunc.load_model(...).predict` both call with the params as sent, and check them there, for
    models whose Python model offers `mmcore_check_request` (ours) only. This is what `_check_first`
    does. It relies on public API only (`PyFuncModel.predict`, `unwrap_python_model`); it runs before
    MLflow's schema enforcement, so a bad column type or a missing `task` gets our one-line message too.
If an MLflow upgrade stops calling `PyFuncModel.predict`, the unknown-param test against the real
`mlflow models serve` (tests/flows/test_mlflow_server.py) fails; everything else is still checked by
`answer_requests` inside `predict`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc import PyFuncModel

from mmcore.serving import Contract, answer_requests, check_params, check_requests, load_predictor

_log = logging.getLogger(__name__)


class MultimodalModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over `Predictor`: the bundle is the model's one artifact."""

    def load_context(self, context: Any) -> None:
        self.predictor = load_predictor(context.artifacts["bundle"])
        self.contract = Contract.of(self.predictor)

    def mmcore_check_request(self, model_input: Any, params: Any) -> None:
        """The contract's checks on a request as the client sent it (before MLflow enforces its schema)."""

        def check() -> None:
            if isinstance(model_input, pd.DataFrame):  # anything else MLflow first makes a table of
                check_requests(model_input, self.contract)
            check_params(params, self.contract.limits)

        _answering(check)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return _answering(lambda: answer_requests(self.predictor, model_input, params))


def _answering(call: Callable[[], Any]) -> Any:
    """`call()`, its errors turned into the MlflowExceptions the scoring server answers without a traceback."""
    try:
        return call()
    except MlflowException:
        raise
    except ValueError as exc:  # a bad request: `mlflow models serve` answers it with a 400 and this message
        raise MlflowException.invalid_parameter_value(str(exc)) from exc
    except Exception as exc:
        _log.exception("the model failed on a request")
        raise MlflowException(f"the model failed on this request ({type(exc).__name__}); the server's log "
                              "has the details", error_code=INTERNAL_ERROR) from exc


def _check_first(predict: Callable[..., Any]) -> Callable[..., Any]:
    """`PyFuncModel.predict` that first lets our model check the request as sent (see the module docstring)."""

    @functools.wraps(predict)
    def predict_checked(self: PyFuncModel, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            check = getattr(self.unwrap_python_model(), "mmcore_check_request", None)
        except MlflowException:  # not a Python model: not ours
            check = None
        if callable(check):
            check(data, params)
        return predict(self, data, params)

    predict_checked.mmcore_checks_first = True  # type: ignore[attr-defined]
    return predict_checked


# MLflow runs this file again (as a new module) for every model it loads: wrap once per process
if not getattr(PyFuncModel.predict, "mmcore_checks_first", False):
    PyFuncModel.predict = _check_first(PyFuncModel.predict)

mlflow.models.set_model(MultimodalModel())
