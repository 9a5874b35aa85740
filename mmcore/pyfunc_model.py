"""The registered model's entry point (MLflow models-from-code): MLflow runs this file when it loads the
model, so loading never unpickles anything.

This is the one module of mmcore that imports MLflow, because MLflow itself loads it; it needs nothing
of tasks/ or flows/, and so nothing of Prefect.
"""

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from mmcore.inference import Predictor
from mmcore.serving import answer_requests


class MultimodalModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper over `Predictor`: the bundle is the model's one artifact."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            return answer_requests(self.predictor, model_input, **(params or {}))
        except ValueError as exc:  # a bad request: `mlflow models serve` answers it with a 400 and this message
            raise MlflowException.invalid_parameter_value(str(exc)) from exc


mlflow.models.set_model(MultimodalModel())
