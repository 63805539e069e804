"""Running the search: a stage from request to recommendation, and a worker from start to exit.

What the ``stage1``/``stage2``/``worker``/``export``/``status`` commands do, with the
printing left to them (docs/design.md, "Search protocol" and "Service"):

- :func:`run` is what a stage command calls: the request checked, the stage run;
- :func:`check_request` refuses a bad request before anything is created (no database file,
  no run folder);
- :func:`run_stage` creates (or resumes) the stage's study, queues its grid once, starts the
  workers with the request's launcher (:mod:`psvae_opt.service.launcher`: local processes or a
  SLURM job array), follows them to the end and stores the recommendation;
- :func:`export` writes a stage's files, :func:`status` reads where both stages stand.

A worker's side is :mod:`psvae_opt.service.worker`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna

from psvae_opt.config import Config
from psvae_opt.data import load_session
from psvae_opt.errors import ConfigError
from psvae_opt.reports.dashboard import record_artifact_dir
from psvae_opt.reports.diagnostics import save_choice_note, save_search_summary
from psvae_opt.search import criteria
from psvae_opt.search.recommendation import pareto_front, top_up, withdraw_recommendation
from psvae_opt.search.records import stored_recommendation
from psvae_opt.search.stages import STAGES, seed_summary
from psvae_opt.search.storage import (
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
from psvae_opt.service.launcher import get_launcher
from psvae_opt.service.mlflow_log import require_mlflow
from psvae_opt.service.request import StageOutcome, StageRequest
from psvae_opt.training.run_folder import check_runs_dir

log = logging.getLogger(__name__)
NEEDS_ALPHA = "stage 2 needs alpha: give --alpha A, or run `psvae-opt stage1` first so its recommendation is used"


def _too_few_unsup(n_unsup: int) -> ConfigError:
    return ConfigError(
        f"stage 2 compares unsupervised latents, so it needs n_unsup >= 2 (got {n_unsup}); give --n-unsup 2 or more"
    )


def run(req: StageRequest, cfg: Config) -> StageOutcome:
    """A stage command from request to outcome: the request checked (nothing is created for a
    bad one), then with ``--dry-run`` the batch script only, else the stage run
    (:func:`run_stage`) and its trial counts."""
    mapped = check_request(req, cfg)
    if req.dry_run:
        script, path = get_launcher(req.launcher).script(req, cfg)
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
    if STAGES[req.stage].adaptive and sampler != "grid" and (req.seeds or cfg.stage1.seeds) > 1:
        raise ConfigError(f"--sampler {sampler} draws alphas one trial at a time; --seeds applies to the grid")
    check_runs_dir(cfg.study.runs_dir)
    url = resolve_url(req.storage)
    launcher = get_launcher(req.launcher)
    launcher.check(req, cfg, url)
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if STAGES[req.stage].follows and req.alpha is None and path is not None and not path.exists():
        raise ConfigError(NEEDS_ALPHA)
    mapped = launcher.devices(req)
    if launcher.starts_workers(req, mapped):
        if cfg.study.mlflow_uri:
            require_mlflow(cfg.study.mlflow_uri)
        load_session(cfg.data.path)  # refuse bad data here, not in every worker
    if req.dry_run and not launcher.scripts:
        launcher.script(req, cfg)  # refused in one line
    return mapped


def seed_budget(req: StageRequest, cfg: Config) -> tuple[int, int]:
    """``--seeds auto``: (seeds per beta to start with, the most seeds a beta gets)."""
    initial = req.initial_seeds if req.initial_seeds is not None else cfg.stage2.initial_seeds
    return initial, req.max_seeds if req.max_seeds is not None else cfg.stage2.max_seeds


def _stage2_settings(req: StageRequest, cfg: Config, db: StudyDatabase) -> dict[str, Any]:
    rec = None
    if req.alpha is None or req.n_unsup is None:
        try:
            rec = stored_recommendation(load_stage(db, cfg, 1).user_attrs)
        except NoStudy:
            rec = None
    if req.alpha is None and rec is None:
        raise ConfigError(NEEDS_ALPHA)
    n_unsup = req.n_unsup if req.n_unsup is not None else (rec.n_unsup if rec else cfg.model.n_unsup)
    if n_unsup < 2:
        raise _too_few_unsup(n_unsup)
    seeds = req.seeds if req.seeds is not None else cfg.stage2.seeds
    settings = {
        "alpha": float(req.alpha if req.alpha is not None else rec.alpha),
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


def _start_stage1(req: StageRequest, cfg: Config, db: StudyDatabase) -> tuple[optuna.Study, int]:
    sampler = req.sampler or cfg.stage1.sampler
    seeds = req.seeds if isinstance(req.seeds, int) else cfg.stage1.seeds
    study = create_stage(db, cfg, 1, sampler=sampler, settings={"seeds": seeds})
    if sampler == "grid":
        queued = db.retry(lambda: enqueue_points(study, STAGES[1].grid(cfg, seeds)), what="queueing the grid")
    else:
        n = req.n_trials or cfg.stage1.n_trials
        queued = db.retry(lambda: enqueue_budget(study, n), what="queueing trials")
    return study, queued


def _start_stage2(req: StageRequest, cfg: Config, db: StudyDatabase) -> tuple[optuna.Study, int]:
    settings = _stage2_settings(req, cfg, db)
    study = create_stage(db, cfg, 2, settings=settings)
    first = settings["initial_seeds"] if settings["seeds"] == "auto" else settings["seeds"]
    queued = db.retry(lambda: enqueue_points(study, STAGES[2].grid(cfg, first)), what="queueing the grid")
    return study, queued


# how each stage (of psvae_opt.search.stages) creates or resumes its study and queues its points
STARTS = {1: _start_stage1, 2: _start_stage2}


def _start(req: StageRequest, cfg: Config, db: StudyDatabase) -> tuple[optuna.Study, int]:
    """Create (or resume) the stage's study and queue what it lacks."""
    study, queued = STARTS[req.stage](req, cfg, db)
    record_artifact_dir(study, cfg, req.artifacts)
    return study, queued


def run_stage(req: StageRequest, cfg: Config, db: StudyDatabase, mapped: list[str]) -> StageOutcome:
    """Create or resume the stage, start its workers with the request's launcher, follow them and
    store the recommendation.

    Args:
        mapped: the local workers' devices, from :func:`check_request`.
    """
    launcher = get_launcher(req.launcher)
    study, queued = _start(req, cfg, db)
    outcome = StageOutcome(study, queued)
    started = launcher.start(req, cfg, db, study, mapped, outcome)
    if started is None:
        outcome.followed = False
        return outcome
    outcome.worker_failures = launcher.follow(started, study, db)
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
        outcome.recommendation = STAGES[stage].recommend(study)
        if STAGES[stage].explains_choice:
            save_choice_note(study, outcome.recommendation)
    save_search_summary(study, stage)
    outcome.summary = seed_summary(study, stage)
    outcome.counts = counts(study)
    outcome.front = pareto_front(study)
    return outcome
