"""A worker process from start to exit: its device, the data, one frozen context per stage,
the MLflow hook, and the loop of :mod:`psvae_opt.service.trial_loop` (docs/design.md, "Workers").

``psvae-opt worker`` runs :func:`join`, whether a launcher started it on this machine, a
SLURM array task on a compute node or a user on another machine.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from psvae_opt.config import Config, replace
from psvae_opt.data import load_session, split_frames
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.reports.diagnostics import TrialUploader
from psvae_opt.search import space
from psvae_opt.search.objective import TrialContext, TrialHooks, run_dir_of
from psvae_opt.search.storage import StudyDatabase, heartbeat_interval
from psvae_opt.search.study import BASE_METRICS, load_stage
from psvae_opt.service.trial_loop import StopFlag, run_worker
from psvae_opt.training import devices, gpus

log = logging.getLogger(__name__)


def worker_device(gpu: str | None, cfg: Config) -> tuple[Config, object]:
    """``--gpu N|auto``: the trial device, CUDA checked; and the GPU lock held while working."""
    if gpu is None:
        if cfg.train.device.startswith("cuda"):
            devices.require_cuda(f"train.device = {cfg.train.device!r}")
        return cfg, None
    if gpu != "auto" and not gpu.isdigit():
        raise ConfigError(f"--gpu {gpu!r}: give auto or the index of a visible GPU such as 0")
    devices.require_cuda(f"--gpu {gpu}")
    import torch

    lock = None
    index = int(gpu) if gpu != "auto" else None
    if index is None:
        # an exclusive-process GPU takes one worker (others get a one-line error), unless MPS shares it
        shared = any(m in gpus.EXCLUSIVE_MODES for m in gpus.compute_modes().values()) and not gpus.mps_running()
        index, lock = devices.claim_gpu(torch.cuda.device_count(), slots=1 if shared else 16)
        log.info("worker %d takes GPU %d", os.getpid(), index)
    elif index >= torch.cuda.device_count():
        raise ConfigError(
            f"--gpu {index}: this worker sees {torch.cuda.device_count()} GPU(s) (0..{torch.cuda.device_count() - 1})"
        )
    gpus.select(index)  # the current device from here on; its kernels checked
    return replace(cfg, train={"device": f"cuda:{index}"}), lock


def wait_for_study(db: StudyDatabase, cfg: Config, stage: int, seconds: float) -> optuna.Study:
    """The stage's study once it exists and has trials (or once ``seconds`` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            study = load_stage(db, cfg, stage)
            if db.retry(lambda s=study: s.get_trials(deepcopy=False), what="reading the study"):
                return study
            if time.monotonic() >= deadline:
                return study
        except StorageError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(5)


def require_mlflow(uri: str) -> None:
    """Refuse ``study.mlflow_uri`` in one line when the ``mlflow`` extra is not installed."""
    missing = [m for m in ("mlflow", "optuna_integration") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"study.mlflow_uri = {uri!r} needs {' and '.join(missing)}: pip install 'psvae-opt[mlflow]' "
            '(or set study.mlflow_uri = "")'
        )


def mlflow_hook(uri: str, stage: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Log each complete trial to MLflow: one run per trial in the experiment named after the
    study, with the trial's parameters, the stage's two objective values and the main metrics
    (:data:`~psvae_opt.search.study.BASE_METRICS`, test errors) as metrics and its user attributes as tags."""
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


def context(
    cfg: Config, stage: int, study: optuna.Study, attrs: dict, data: tuple, db: StudyDatabase, progress: bool
) -> TrialContext:
    """The frozen context of a worker's trials of one stage (``attrs``: the study's user attributes)."""
    session, frames = data
    run_dir_of(cfg, stage, 0, attrs.get("run_key"))  # a run key from the database is checked before any trial
    seeds = attrs.get("max_seeds") if attrs.get("seeds") == "auto" else attrs.get("seeds", 1)
    seed_upper = (cfg.stage1.model_seed + seeds - 1) if stage == 1 else seeds - 1
    uploader = db.retry(
        lambda: TrialUploader(db.storage, study, session, cfg, retry=db.retry), what="reading the study"
    )
    on_complete = mlflow_hook(cfg.study.mlflow_uri, stage) if cfg.study.mlflow_uri else None
    return TrialContext(
        cfg,
        stage,
        session,
        frames,
        sampler=attrs.get("sampler", "grid"),
        seed_upper=seed_upper,
        fixed={k: attrs[k] for k in ("alpha", "n_unsup") if k in attrs},
        study_key=attrs.get("run_key"),
        progress=progress,
        hooks=TrialHooks(on_epoch=uploader.on_epoch, on_finish=uploader.on_finish, on_complete=on_complete),
    )


def join(
    cfg: Config, db: StudyDatabase, stages: list[int], *, gpu: str | None, wait: float, progress: bool, stop: StopFlag
) -> int:
    """Work on the stages in order until none has a trial left; returns the trials completed."""
    cfg, _lock = worker_device(gpu, cfg)  # the lock is held until the worker exits
    interval = heartbeat_interval()
    data = None
    total = 0
    for stage in stages:
        study = wait_for_study(db, cfg, stage, wait)
        if data is None:  # after the wait: the launcher may be the one writing the data
            session = load_session(cfg.data.path)
            data = (session, split_frames(session, cfg.data.split_counts, cfg.data.data_seed, mode=cfg.data.split_mode))
        attrs = db.retry(lambda s=study: s.user_attrs, what="reading the study")
        ctx = context(cfg, stage, study, attrs, data, db, progress)
        max_seeds = attrs.get("max_seeds") if attrs.get("seeds") == "auto" else None
        total += run_worker(db, study, ctx, stop, interval=interval, max_seeds=max_seeds)
    return total
