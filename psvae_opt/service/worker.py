"""A worker process from start to exit: its device, the data, one frozen context per stage,
the MLflow hook, and the loop of :mod:`psvae_opt.service.trial_loop` (docs/design.md, "Workers").

``psvae-opt worker`` runs :func:`run` (which joins the stages, :func:`join`), whether a
launcher started it on this machine, a SLURM array task on a compute node or a user on
another machine.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import optuna

from psvae_opt.config import Config, replace
from psvae_opt.data import load_session, split_frames
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.reports.diagnostics import TrialUploader
from psvae_opt.search.objective import TrialContext, TrialHooks, run_dir_of
from psvae_opt.search.stages import STAGES
from psvae_opt.search.storage import DEFAULT_HEARTBEAT, DEFAULT_PATIENCE, StudyDatabase, open_database
from psvae_opt.search.study import load_stage
from psvae_opt.service import gpu_slots
from psvae_opt.service.mlflow_log import mlflow_hook
from psvae_opt.service.slurm import GPU_FLAG
from psvae_opt.service.trial_loop import StopFlag, run_worker
from psvae_opt.training import devices, gpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRequest:
    """What ``psvae-opt worker`` asks for: its options, and the environment the command edge read
    (:mod:`psvae_opt.commands.environment`).

    Attributes:
        storage: the study database URL (``--storage``, else ``$PSVAE_OPT_STORAGE``; None: the SQLite file here).
        gpu: ``--gpu``: "auto", a visible GPU's index, or None (``train.device``).
        wait: seconds to wait for a stage's study to appear.
        patience, heartbeat: seconds of database outage ridden out; seconds between heartbeats.
        gpu_locks: ``--gpu auto``'s lock folder (None: the private default).
        artifacts: where this machine mounts the artifact folder (None: as recorded on the study).
        cuda_visible: the worker's CUDA_VISIBLE_DEVICES, to name it when it hides every GPU.
        mps_pipe: NVIDIA MPS's pipe folder (``$CUDA_MPS_PIPE_DIRECTORY``; None: its default).
    """

    stages: tuple[int, ...]
    storage: str | None = None
    gpu: str | None = None
    wait: float = 0.0
    progress: bool = False
    patience: float = DEFAULT_PATIENCE
    heartbeat: int = DEFAULT_HEARTBEAT
    gpu_locks: str | None = None
    artifacts: str | None = None
    cuda_visible: str | None = None
    mps_pipe: str | None = None


def check_gpu_option(gpu: str | None) -> None:
    """``--gpu`` is auto or an index: checked once, before anything starts."""
    if gpu is not None and gpu != "auto" and not gpu.isdigit():
        raise ConfigError(f"{GPU_FLAG} {gpu!r}: give auto or the index of a visible GPU such as 0")


def run(req: WorkerRequest, cfg: Config) -> int:
    """``psvae-opt worker``: check the request, stop cleanly on SIGTERM/SIGINT/SIGUSR1, join the
    stages' studies (the launcher creates the database) and work until none has a trial left;
    returns the trials completed."""
    check_gpu_option(req.gpu)
    devices.tune_cpu_allocator()
    stop = StopFlag()
    stop.install()
    db = open_database(req.storage, must_exist=True, patience=req.patience)
    return join(cfg, db, req, stop)


def worker_device(req: WorkerRequest, cfg: Config) -> tuple[Config, object]:
    """``--gpu N|auto`` (checked by :func:`check_gpu_option`): the trial device, CUDA checked;
    and the GPU lock held while working."""
    gpu = req.gpu
    if gpu is None:
        if cfg.train.device.startswith("cuda"):
            devices.require_cuda(f"train.device = {cfg.train.device!r}", req.cuda_visible)
        return cfg, None
    devices.require_cuda(f"{GPU_FLAG} {gpu}", req.cuda_visible)
    import torch

    lock = None
    index = int(gpu) if gpu != "auto" else None
    if index is None:
        # an exclusive-process GPU takes one worker (others get a one-line error), unless MPS shares it
        exclusive = any(m in gpus.EXCLUSIVE_MODES for m in gpus.compute_modes().values())
        shared = exclusive and not gpus.mps_running(req.mps_pipe)
        index, lock = gpu_slots.claim_gpu(torch.cuda.device_count(), req.gpu_locks, slots=1 if shared else 16)
        log.info("worker %d takes GPU %d", os.getpid(), index)
    elif index >= torch.cuda.device_count():
        raise ConfigError(
            f"{GPU_FLAG} {index}: this worker sees {torch.cuda.device_count()} GPU(s) "
            f"(0..{torch.cuda.device_count() - 1})"
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


def context(
    cfg: Config,
    stage: int,
    study: optuna.Study,
    attrs: dict,
    data: tuple,
    db: StudyDatabase,
    progress: bool,
    artifacts: str | None = None,
) -> TrialContext:
    """The frozen context of a worker's trials of one stage (``attrs``: the study's user attributes)."""
    session, frames = data
    run_dir_of(cfg, stage, 0, attrs.get("run_key"))  # a run key from the database is checked before any trial
    seeds = attrs.get("max_seeds") if attrs.get("seeds") == "auto" else attrs.get("seeds", 1)
    seed_upper = STAGES[stage].first_seed(cfg) + seeds - 1
    uploader = db.retry(
        lambda: TrialUploader(db.storage, study, session, cfg, retry=db.retry, mounted_artifacts=artifacts),
        what="reading the study",
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


def join(cfg: Config, db: StudyDatabase, req: WorkerRequest, stop: StopFlag) -> int:
    """Work on the stages in order until none has a trial left; returns the trials completed."""
    cfg, _lock = worker_device(req, cfg)  # the lock is held until the worker exits
    data = None
    total = 0
    for stage in req.stages:
        study = wait_for_study(db, cfg, stage, req.wait)
        if data is None:  # after the wait: the launcher may be the one writing the data
            session = load_session(cfg.data.path)
            data = (session, split_frames(session, cfg.data.split_counts, cfg.data.data_seed, mode=cfg.data.split_mode))
        attrs = db.retry(lambda s=study: s.user_attrs, what="reading the study")
        ctx = context(cfg, stage, study, attrs, data, db, req.progress, req.artifacts)
        max_seeds = attrs.get("max_seeds") if attrs.get("seeds") == "auto" else None
        total += run_worker(db, study, ctx, stop, interval=req.heartbeat, max_seeds=max_seeds)
    return total
