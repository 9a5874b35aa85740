"""Embedded defaults: all local state under one project folder (`.mm/` unless MM_HOME says otherwise).

Standard variables win when set (MLFLOW_TRACKING_URI, PREFECT_API_URL, PREFECT_HOME, ...), so the
same code talks to a real MLflow tracking server or Prefect server without changes. This must run
before Prefect is imported, which is why `flows/__init__.py` calls it.
"""

from __future__ import annotations

import os
from pathlib import Path


def mm_home() -> Path:
    return Path(os.environ.get("MM_HOME", ".mm")).resolve()


def configure() -> Path:
    """Sets default environment variables for Prefect and MLflow; returns the state folder."""
    home = mm_home()
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # else the embedded server logs telemetry errors
        "DO_NOT_TRACK": "1",
        # A fresh embedded database takes ~17 s to create; Prefect's default start-up limit is 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MM_ARTIFACT_ROOT": (home / "artifacts").as_uri(),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # progress bars garble flow logs
        "GIT_PYTHON_REFRESH": "quiet",  # MLflow probes git; missing git is not an error here
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    return home
