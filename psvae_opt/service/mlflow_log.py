"""The ``mlflow`` extra: checking that it is installed (a stage refuses ``study.mlflow_uri``
without it before anything starts) and the hook a worker calls on each complete trial.
Both the launcher side (:mod:`psvae_opt.service.stage_run`) and the worker side
(:mod:`psvae_opt.service.worker`) use it; it depends on neither."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from psvae_opt.errors import require_extra
from psvae_opt.search import space
from psvae_opt.search.rules import BASE_METRICS


def require_mlflow(uri: str) -> None:
    """Refuse ``study.mlflow_uri`` in one line when the ``mlflow`` extra is not installed."""
    require_extra(f"study.mlflow_uri = {uri!r}", "mlflow")


def mlflow_hook(uri: str, stage: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Log each complete trial to MLflow: one run per trial in the experiment named after the
    study, with the trial's parameters, the stage's two objective values and the main metrics
    (:data:`~psvae_opt.search.recommendation.BASE_METRICS`, test errors) as metrics and its user attributes as tags."""
    require_mlflow(uri)
    import mlflow
    from optuna_integration.mlflow import MLflowCallback

    if "://" not in uri:  # a local folder: MLflow's file store at its absolute path, whatever a worker's cwd
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):  # MLflow 3 refuses its file store (in maintenance) unless allowed
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    with warnings.catch_warnings():  # deprecated since optuna-integration 4.9, removed in 6 (the extra pins < 6)
        warnings.simplefilter("ignore", FutureWarning)
        callback = MLflowCallback(tracking_uri=uri, metric_name=list(space.OBJECTIVES[stage]))

    def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        callback(study, trial)
        run = mlflow.last_active_run()  # the run the callback just wrote
        names = (*BASE_METRICS, "test_pixel_mse", "test_label_mse", "test_label_r2")
        values = {k: float(trial.user_attrs[k]) for k in names if _finite(trial.user_attrs.get(k))}
        if run is not None and values:
            mlflow.log_metrics(values, run_id=run.info.run_id)

    return log_trial


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
