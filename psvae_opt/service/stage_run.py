"""Running the search: a stage from request to recommendation, and a worker from start to exit.

What the ``stage1``/``stage2``/``worker``/``export``/``status`` commands do, with the
printing left to them (docs/design.md, "Search protocol" and "Service"):

- :func:`run` is what a stage command calls: the request checked, the stage run;
- :func:`check_request` refuses a bad request before anything is created (no database file,
  no run folder);
- :func:`run_stage` creates (or resumes) the stage's study, queues its grid once, starts the
  workers (local processes or a SLURM job array), follows them to the end and stores the
  recommendation;
- :func:`export` writes a stage's files, :func:`status` reads where both stages stand.

A worker's side is :mod:`psvae_opt.service.worker`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial

from psvae_opt.config import Config
from psvae_opt.data import load_session, session_bytes
from psvae_opt.errors import ConfigError, DataError
from psvae_opt.reports.dashboard import record_artifact_dir
from psvae_opt.reports.diagnostics import save_choice_note, save_search_summary
from psvae_opt.search import criteria, space
from psvae_opt.search.recommendation import (
    pareto_front,
    recommend_stage1,
    recommend_stage2,
    seed_summary,
    top_up,
    withdraw_recommendation,
)
from psvae_opt.search.storage import (
    DEFAULT_PATIENCE,
    StudyDatabase,
    open_database,
    resolve_url,
    sqlite_path,
)
from psvae_opt.search.study import (
    NoStudy,
    counts,
    create_stage,
    enqueue_budget,
    enqueue_points,
    incomplete,
    load_stage,
)
from psvae_opt.service import launchers, slurm
from psvae_opt.service.mlflow_log import require_mlflow
from psvae_opt.training import devices, gpus
from psvae_opt.training.run_folder import check_runs_dir

log = logging.getLogger(__name__)
NEEDS_ALPHA = "stage 2 needs alpha: give --alpha A, or run `psvae-opt stage1` first so its recommendation is used"


def _too_few_unsup(n_unsup: int) -> ConfigError:
    return ConfigError(
        f"stage 2 compares unsupervised latents, so it needs n_unsup >= 2 (got {n_unsup}); give --n-unsup 2 or more"
    )


@dataclass(frozen=True)
class StageRequest:
    """What a stage command asks for: its command-line options (``storage``: ``--storage``, else
    ``$PSVAE_OPT_STORAGE``) and the environment it runs in."""

    stage: int
    config_path: str
    overrides: tuple[str, ...] = ()
    storage: str | None = None
    workers: int | None = None
    gpus: tuple[str, ...] = ()
    workers_per_gpu: int = 1
    launcher: Literal["local", "slurm"] = "local"
    wait: bool = False  # with no local workers: follow the stage until others finish it
    no_wait: bool = False  # slurm: return once the array is submitted
    dry_run: bool = False  # slurm: print the batch script, submit nothing
    sampler: str | None = None
    n_trials: int | None = None
    seeds: int | Literal["auto"] | None = None
    initial_seeds: int | None = None  # --seeds auto; default stage2.initial_seeds
    max_seeds: int | None = None  # --seeds auto; default stage2.max_seeds
    criterion: str | None = None  # stage 2's selection criterion; default stage2.criterion
    alpha: float | None = None
    n_unsup: int | None = None
    # the environment, read by the command edge (psvae_opt.commands.environment)
    patience: float = DEFAULT_PATIENCE  # seconds of database outage ridden out
    artifacts: str | None = None  # where this machine mounts the artifact folder (None: the default)
    cuda_visible: str | None = None  # the launcher's CUDA_VISIBLE_DEVICES: what --gpus indices count
    mps_pipe: str | None = None  # NVIDIA MPS's pipe folder (None: its default)


@dataclass
class StageOutcome:
    """What a stage command prints."""

    study: optuna.Study | None
    queued: int = 0
    worker_failures: int = 0
    followed: bool = True
    script: str | None = None
    script_path: Path | None = None
    job_id: str | None = None
    recommendation: dict[str, Any] | None = None
    summary: list[dict[str, Any]] = field(default_factory=list)
    gave_up: list[FrozenTrial] = field(default_factory=list)
    unfinished: list[FrozenTrial] = field(default_factory=list)  # waiting or running when the launcher ended
    counts: dict[str, int] = field(default_factory=dict)
    front: list[FrozenTrial] = field(default_factory=list)
    storage_shown: str = ""  # the database, password hidden


def run(req: StageRequest, cfg: Config) -> StageOutcome:
    """A stage command from request to outcome: the request checked (nothing is created for a
    bad one), then with ``--dry-run`` the batch script only, else the stage run
    (:func:`run_stage`) and its trial counts."""
    mapped = check_request(req, cfg)
    if req.dry_run:
        script, path = slurm_script(req, cfg)
        return StageOutcome(None, followed=False, script=script, script_path=path)
    db = open_database(req.storage, patience=req.patience)
    outcome = run_stage(req, cfg, db, mapped)
    outcome.storage_shown = db.shown
    if not outcome.followed:
        study = outcome.study
        outcome.counts = db.retry(lambda: counts(study), what="counting trials")
    return outcome


def check_request(req: StageRequest, cfg: Config) -> list[str]:
    """Refuse a bad request in one line, before a database or folder is created.

    Returns:
        the ``CUDA_VISIBLE_DEVICES`` entries of the local workers' GPUs (CUDA checked).
    """
    if req.workers is not None and req.workers < 0:
        raise ConfigError(f"--workers {req.workers}: give 0 or more")
    if req.workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu {req.workers_per_gpu}: give 1 or more")
    if req.n_trials is not None and req.n_trials < 1:
        raise ConfigError(f"--n-trials {req.n_trials}: give 1 or more")
    if req.alpha is not None and not (math.isfinite(req.alpha) and req.alpha > 0):
        raise ConfigError(f"--alpha {req.alpha}: give a finite label weight > 0")
    if req.n_unsup is not None and req.n_unsup < 2:
        raise _too_few_unsup(req.n_unsup)
    if isinstance(req.seeds, int) and req.seeds < 1:
        raise ConfigError(f"--seeds {req.seeds}: give 1 or more (or auto in stage 2)")
    initial, most = seed_budget(req, cfg)
    if req.seeds == "auto" and not 2 <= initial <= most:
        raise ConfigError(
            f"--initial-seeds {initial} --max-seeds {most}: need 2 <= initial <= max (an interval needs two seeds)"
        )
    sampler = req.sampler or cfg.stage1.sampler
    if req.stage == 1 and sampler != "grid" and (req.seeds or cfg.stage1.seeds) > 1:
        raise ConfigError(f"--sampler {sampler} draws alphas one trial at a time; --seeds applies to the grid")
    check_runs_dir(cfg.study.runs_dir)
    url = resolve_url(req.storage)
    if req.launcher == "slurm":
        check_slurm_request(req, cfg, url)
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if req.stage == 2 and req.alpha is None and path is not None and not path.exists():
        raise ConfigError(NEEDS_ALPHA)
    mapped = local_devices(req) if req.launcher == "local" else []
    if (n_local_workers(req, mapped) and req.launcher == "local") or (req.launcher == "slurm" and not req.dry_run):
        if cfg.study.mlflow_uri:
            require_mlflow(cfg.study.mlflow_uri)
        load_session(cfg.data.path)  # refuse bad data here, not in every worker
    if req.dry_run and req.launcher != "slurm":
        raise ConfigError("--dry-run prints the SLURM batch script: use it with --launcher slurm")
    return mapped


def check_slurm_request(req: StageRequest, cfg: Config, url: str) -> None:
    """What ``--launcher slurm`` cannot do, refused in one line; the script is rendered once
    here, so that what it refuses (a log folder with a space) is refused before the study exists."""
    if url.startswith("sqlite"):
        raise ConfigError(
            "--launcher slurm needs a database server: compute nodes cannot share a SQLite file safely "
            "(file locks over NFS); give --storage postgresql+psycopg://... (README, 'On a SLURM cluster')"
        )
    if req.workers == 0:
        raise ConfigError(
            "--launcher slurm --workers 0: give the number of array tasks (1 or more); "
            "to only create and queue the stage, use --launcher local --workers 0"
        )
    if req.gpus:
        raise ConfigError(
            f"--gpus {','.join(req.gpus)} picks GPUs of this machine; array tasks get theirs from SLURM: "
            "set slurm.gpus_per_task instead (--set slurm.gpus_per_task=N)"
        )
    slurm_script(req, cfg)


def seed_budget(req: StageRequest, cfg: Config) -> tuple[int, int]:
    """``--seeds auto``: (seeds per beta to start with, the most seeds a beta gets)."""
    initial = req.initial_seeds if req.initial_seeds is not None else cfg.stage2.initial_seeds
    return initial, req.max_seeds if req.max_seeds is not None else cfg.stage2.max_seeds


def local_devices(req: StageRequest) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of the local workers' GPUs (``--gpus all``: every
    visible one); CUDA checked first, and the GPUs' compute mode when workers share them."""
    if not req.gpus:
        return []
    what = f"--gpus {','.join(req.gpus)}"
    wanted = req.gpus
    if wanted == ("all",):
        devices.require_cuda(what, req.cuda_visible)
        import torch

        wanted = tuple(str(i) for i in range(torch.cuda.device_count()))
    mapped = devices.visible_devices(wanted, req.cuda_visible)
    devices.require_cuda(what, req.cuda_visible)
    n_workers = n_local_workers(req, mapped)
    per_gpu = -(-n_workers // len(mapped)) if n_workers else 0
    gpus.check_sharing(mapped, per_gpu, f"{what} with {n_workers} workers", req.mps_pipe)
    return mapped


def n_local_workers(req: StageRequest, mapped: list[str]) -> int:
    if req.workers is not None:
        return req.workers
    return len(mapped) * req.workers_per_gpu if mapped else 1


def _stage2_settings(req: StageRequest, cfg: Config, db: StudyDatabase) -> dict[str, Any]:
    rec = None
    if req.alpha is None or req.n_unsup is None:
        try:
            rec = load_stage(db, cfg, 1).user_attrs.get("recommendation")
        except NoStudy:
            rec = None
    if req.alpha is None and rec is None:
        raise ConfigError(NEEDS_ALPHA)
    n_unsup = req.n_unsup if req.n_unsup is not None else (rec["n_unsup"] if rec else cfg.model.n_unsup)
    if n_unsup < 2:
        raise _too_few_unsup(n_unsup)
    seeds = req.seeds if req.seeds is not None else cfg.stage2.seeds
    settings = {
        "alpha": float(req.alpha if req.alpha is not None else rec["alpha"]),
        "n_unsup": int(n_unsup),
        "criterion": req.criterion or cfg.stage2.criterion,  # not an identity: a rerun may choose another
    }
    if seeds == "auto":
        initial, most = seed_budget(req, cfg)
        settings.update(seeds="auto", initial_seeds=initial, max_seeds=most)
    else:
        settings.update(seeds=int(seeds), max_seeds=None)
    first = settings["initial_seeds"] if seeds == "auto" else settings["seeds"]
    if settings["criterion"].removesuffix("+guards") in criteria.CROSS_SEED and first < criteria.MIN_SEEDS:
        raise ConfigError(
            f"criterion {settings['criterion']} compares the seeds of each beta: it needs at least "
            f"{criteria.MIN_SEEDS} seeds per beta (--seeds {first} gives {first}); "
            f"use --seeds {criteria.MIN_SEEDS} or more, or --criterion zu_corr (the guide's rule)"
        )
    return settings


def _start(req: StageRequest, cfg: Config, db: StudyDatabase) -> tuple[optuna.Study, int]:
    """Create (or resume) the stage's study and queue what it lacks."""
    if req.stage == 1:
        sampler = req.sampler or cfg.stage1.sampler
        seeds = req.seeds if isinstance(req.seeds, int) else cfg.stage1.seeds
        study = create_stage(db, cfg, 1, sampler=sampler, settings={"seeds": seeds})
        if sampler == "grid":
            queued = db.retry(lambda: enqueue_points(study, space.stage1_grid(cfg, seeds)), what="queueing the grid")
        else:
            n = req.n_trials or cfg.stage1.n_trials
            queued = db.retry(lambda: enqueue_budget(study, n), what="queueing trials")
    else:
        settings = _stage2_settings(req, cfg, db)
        study = create_stage(db, cfg, 2, settings=settings)
        first = settings["initial_seeds"] if settings["seeds"] == "auto" else settings["seeds"]
        queued = db.retry(lambda: enqueue_points(study, space.stage2_grid(cfg, first)), what="queueing the grid")
    record_artifact_dir(study, cfg, req.artifacts)
    return study, queued


def slurm_folder(cfg: Config, stage: int) -> Path:
    """Where a stage's batch script and task logs live: beside its run folders."""
    return Path(cfg.study.runs_dir).resolve() / space.study_name(cfg, stage) / "slurm"


def slurm_script(req: StageRequest, cfg: Config) -> tuple[str, Path]:
    """The stage's batch script and where it is kept."""
    folder = slurm_folder(cfg, req.stage)
    per_task = cfg.slurm.workers_per_task
    if req.workers_per_gpu > 1:  # --workers-per-gpu K: K workers on each of the task's GPUs (or its CPUs)
        per_task = max(cfg.slurm.gpus_per_task, 1) * req.workers_per_gpu
    script = slurm.batch_script(
        cfg.slurm,
        job_name=space.study_name(cfg, req.stage),
        n_tasks=req.workers or 1,
        worker_argv=launchers.worker_argv(req.config_path, req.overrides, [req.stage], ["--wait", "600"]),
        workers_per_task=per_task,
        log_dir=folder / "logs",
        workdir=Path.cwd(),
        dataset_bytes=_dataset_bytes(cfg),
    )
    return script, folder / f"stage{req.stage}.sbatch"


def _dataset_bytes(cfg: Config) -> int:
    """The session's size in host memory; 0 where it cannot be read yet (a --dry-run before the
    data exists: the script then asks for the workers' base memory only)."""
    try:
        return session_bytes(cfg.data.path)
    except (DataError, OSError):
        return 0


def run_stage(req: StageRequest, cfg: Config, db: StudyDatabase, mapped: list[str]) -> StageOutcome:
    """Create or resume the stage, run its workers, follow them and store the recommendation.

    Args:
        mapped: the local workers' devices, from :func:`check_request`.
    """
    n_workers = n_local_workers(req, mapped)
    study, queued = _start(req, cfg, db)
    outcome = StageOutcome(study, queued)
    env = launchers.worker_env(db)
    if req.launcher == "slurm":
        outcome.script, outcome.script_path = slurm_script(req, cfg)
        outcome.script_path.parent.mkdir(parents=True, exist_ok=True)
        (outcome.script_path.parent / "logs").mkdir(exist_ok=True)
        outcome.script_path.write_text(outcome.script)
        url = {launchers.ENV_VAR: db.url}
        outcome.job_id = slurm.submit(outcome.script_path, env=url)
        if req.no_wait:
            outcome.followed = False
            return outcome
        outcome.worker_failures = launchers.follow_slurm(
            outcome.job_id,
            req.workers or 1,
            study,
            db,
            resubmit=lambda tasks: slurm.submit(outcome.script_path, env=url, tasks=tasks),
        )
    elif n_workers:
        argv = launchers.worker_argv(req.config_path, req.overrides, [req.stage])
        log_dir = Path(cfg.study.runs_dir) / study.study_name / "workers"
        outcome.worker_failures = launchers.launch_local(argv, env, mapped, n_workers, study, db, log_dir)
    elif req.wait:
        launchers.wait_until_done(study, db)
    else:
        outcome.followed = False
        return outcome
    return finish_stage(study, req.stage, db, outcome)


def finish_stage(study: optuna.Study, stage: int, db: StudyDatabase, outcome: StageOutcome) -> StageOutcome:
    """Recommend, save the summary chart, collect what the printout needs.

    The launcher reads the database once more after its workers end, perhaps during an outage
    they rode out, so this rides it out too (every step may run again: each is idempotent).
    """
    return db.retry(lambda: _finish(study, stage, outcome), what="summarising the stage")


def _finish(study: optuna.Study, stage: int, outcome: StageOutcome) -> StageOutcome:
    if top_up(study, study.user_attrs.get("max_seeds")):
        log.warning("the workers stopped before --seeds auto finished; run the stage again to add seeds")
    outcome.unfinished, outcome.gave_up = incomplete(study)
    if outcome.unfinished or outcome.gave_up:  # a recommendation from part of the grid: none
        withdraw_recommendation(study)
        outcome.recommendation = None
    else:
        outcome.recommendation = (recommend_stage1 if stage == 1 else recommend_stage2)(study)
        if stage == 2:
            save_choice_note(study, outcome.recommendation)
    save_search_summary(study, stage)
    outcome.summary = seed_summary(study, stage)
    outcome.counts = counts(study)
    outcome.front = pareto_front(study)
    return outcome
