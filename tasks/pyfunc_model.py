"""MLflow models-from-code entry point: MLflow runs this file to build the model when it loads it.

Keeping the model as code (not a pickled object) means loading never unpickles anything.
"""

import mlflow

from tasks.registry import MultimodalModel

mlflow.models.set_model(MultimodalModel())
