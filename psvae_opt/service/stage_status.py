"""What the commands that change nothing read of the stages: ``status`` (trial counts, the
stored recommendation, grid points that gave up, running trials without a live worker) and
``export`` (the recommendation recomputed, not stored, and the stage's files written)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from psvae_opt.config import Config
from psvae_opt.errors import StorageError
from psvae_opt.search import space, trial_queue
from psvae_opt.search.records import Recommendation, stored_recommendation
from psvae_opt.search.storage import DEFAULT_HEARTBEAT, GRACE_BEATS, StudyDatabase
from psvae_opt.search.study import NoStudy, counts, given_up, incomplete, load_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageStatus:
    """What ``status`` prints of one stage: ``study`` None when it was never started;
    ``running`` trials, of which ``gone`` have had no heartbeat for ``grace`` seconds (their
    workers are gone: a worker re-queues them, or the stage run again)."""

    stage: int
    name: str
    study: optuna.Study | None = None
    counts: dict[str, int] = field(default_factory=dict)
    recommendation: Recommendation | None = None
    gave_up: list[FrozenTrial] = field(default_factory=list)
    running: int = 0
    gone: int = 0
    grace: float = 0.0


def status(cfg: Config, db: StudyDatabase, heartbeat: int = DEFAULT_HEARTBEAT) -> list[StageStatus]:
    """Trial counts, recommendation, given-up grid points and running trials without a live
    worker, of both stages; ``heartbeat``: the workers' seconds between heartbeats."""
    out = []
    grace = GRACE_BEATS * heartbeat
    for stage in space.STAGE_NUMBERS:
        try:
            study = load_stage(db, cfg, stage)
        except NoStudy:
            out.append(StageStatus(stage, space.study_name(cfg, stage)))
            continue
        rec = stored_recommendation(study.user_attrs)
        ages = db.retry(lambda s=study: trial_queue.heartbeat_ages(s), what="reading heartbeats")
        gone = sum(age is None or age > grace for age in ages.values())
        out.append(
            StageStatus(
                stage, study.study_name, study, counts(study), rec, given_up(study), len(ages), gone, float(grace)
            )
        )
    return out


def export(cfg: Config, db: StudyDatabase, stage: int, out: str | Path) -> list[Path]:
    """Recompute the recommendation (trials may have finished since) and write the stage's files.

    Export only reads the database: the recommendation is computed, not stored, and it is left
    out (None) while the stage is incomplete (trials waiting or running, points that gave up).
    """
    from psvae_opt.reports.stage_files import export_stage  # plotly: only where files are written
    from psvae_opt.search.stages import STAGES

    study = load_stage(db, cfg, stage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    unfinished, gave_up = incomplete(study)
    if not complete and not gave_up:
        raise StorageError(f"study {study.study_name!r} has no complete trial yet ({counts(study)}); nothing to export")
    rec = None
    if complete and not unfinished and not gave_up:  # (a stage whose only trials gave up still exports its failures)
        rec = STAGES[stage].recommend(study, store=False)
    if unfinished:
        log.warning("study %s is incomplete (%s): exported without a recommendation", study.study_name, counts(study))
    return export_stage(db.storage, study, stage, out, recommendation=rec)
