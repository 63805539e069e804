"""The studies of both stages: creation (and refusing a study psvae-opt did not create), the
grid queued, trial counts and what keeps a stage from being finished. The seed statistics and
recommendations read from them are in :mod:`psvae_opt.search.recommendation`.

Study user attributes hold what the stage was run with (``stage``, ``sampler``, ``seeds``;
stage 2's ``alpha``, ``n_unsup``, ``max_seeds``), the ``run_key`` level of its run folders
and, once trials finish, its ``recommendation`` (and the per-group ``seed_summary``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt.config import Config, dump_config
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.search import space, trial_queue
from psvae_opt.search.storage import StudyDatabase

UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
LIVE = (TrialState.COMPLETE, *UNFINISHED)
IDENTITY = ("stage", "sampler", "alpha", "n_unsup")  # settings a study cannot change once started


def create_stage(
    db: StudyDatabase, config: Config, stage: int, *, sampler: str = "grid", settings: dict | None = None
) -> optuna.Study:
    """Create the stage's study (or load it, checking it was started with the same settings).

    ``settings`` are stored as study attributes: identity ones (:data:`IDENTITY`) must match
    an existing study; others (the seed counts) are updated. An existing study of the name that
    psvae-opt did not create for this stage is refused (:func:`check_own`) before anything is written.
    """
    name = space.study_name(config, stage)
    if name in _study_names(db):
        check_own(db.retry(lambda: optuna.load_study(study_name=name, storage=db.storage), what="loading"), stage)
    study = db.retry(
        lambda: optuna.create_study(
            storage=db.storage,
            study_name=space.study_name(config, stage),
            directions=list(space.DIRECTIONS[stage]),
            sampler=space.SAMPLERS[sampler](config.stage1.model_seed),
            load_if_exists=True,
        ),
        what="creating the study",
    )
    wanted = {"stage": stage, "sampler": sampler, **(settings or {})}
    attrs = study.user_attrs
    for key in IDENTITY:
        old = attrs.get(key)
        if key in wanted and old is not None and old != wanted[key]:
            raise ConfigError(
                f"study {study.study_name!r} was started with {key} = {old!r}, not {wanted[key]!r}; "
                f"finish it with the same settings or choose a new name with --set study.name=NEW"
            )
    if not attrs:
        db.retry(lambda: study.set_metric_names(list(space.OBJECTIVES[stage])), what="naming the objectives")
        db.retry(lambda: study.set_user_attr("study_file", dump_config(config)), what="recording the study file")
        # the run folders' own level: a study of the same name started later (or in another
        # database) trains in new folders instead of resuming this one's checkpoints
        key = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        db.retry(lambda: study.set_user_attr("run_key", key), what="recording the run key")
    for key, value in wanted.items():
        if attrs.get(key) != value:
            db.retry(lambda k=key, v=value: study.set_user_attr(k, v), what=f"recording {key}")
    return study


def load_stage(db: StudyDatabase, config: Config, stage: int) -> optuna.Study:
    """Load an existing stage study; a clear error when it was never created."""
    name = space.study_name(config, stage)
    if name not in _study_names(db):
        raise NoStudy(f"no stage-{stage} study {name!r} in {db.shown}; run `psvae-opt stage{stage}` first")
    study = db.retry(lambda: optuna.load_study(study_name=name, storage=db.storage), what="loading the study")
    check_own(study, stage)
    # Each process draws from its own stream: equally seeded adaptive samplers in parallel
    # workers would propose the same points.
    study.sampler = space.SAMPLERS[study.user_attrs.get("sampler", "grid")](None)
    return study


class NoStudy(StorageError):
    """The database holds no study of the stage's name (not yet started)."""


def _study_names(db: StudyDatabase) -> list[str]:
    return [s.study_name for s in db.retry(db.storage.get_all_studies, what="listing studies")]


def check_own(study: optuna.Study, stage: int) -> None:
    """Refuse in one line a study of this name that is not psvae-opt's stage ``stage``: other
    directions, another stage, or trials without psvae-opt's attributes (another tool's study).
    An empty study with the right directions is taken (a launcher stopped while creating it)."""
    directions = [d.name.lower() for d in study.directions]
    attrs = study.user_attrs
    why = None
    if directions != list(space.DIRECTIONS[stage]):
        why = f"its directions are {', '.join(directions)}"
    elif attrs.get("stage") not in (None, stage):
        why = f"it is a stage-{attrs['stage']} study"
    elif ("stage" not in attrs or "run_key" not in attrs) and study.get_trials(deepcopy=False):
        why = "it has trials but not psvae-opt's study attributes"
    if why:
        raise StorageError(
            f"study {study.study_name!r} in this database is not a psvae-opt stage-{stage} study ({why}); "
            "choose another name with --set study.name=NEW or another --storage"
        )


def point_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(float(v), 9)) for k, v in params.items()))


def enqueue_points(study: optuna.Study, points: Sequence[dict[str, Any]]) -> int:
    """Queue every grid point that has no complete, running or waiting trial; returns how many.

    A point whose attempts failed (an error, or a spent crash budget) is queued again as the
    next attempt of its lineage: it trains in the first attempt's run folder and resumes its
    checkpoint, with a new crash budget.
    """
    by_point: dict[tuple, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        by_point.setdefault(point_key(trial_queue.point_of(t)), []).append(t)
    queued = 0
    for params in points:
        trials = by_point.get(point_key(params), [])
        if any(t.state in LIVE for t in trials):
            continue
        if trials:
            trial_queue.queue_again(study, max(trials, key=lambda t: t.number))
        else:
            study.enqueue_trial(params)
        queued += 1
    return queued


def enqueue_budget(study: optuna.Study, n_trials: int) -> int:
    """Queue empty trials (the sampler fills them when popped) up to ``n_trials`` in all."""
    have = len(study.get_trials(deepcopy=False, states=LIVE))
    for _ in range(max(n_trials - have, 0)):
        study.enqueue_trial({})
    return max(n_trials - have, 0)


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state."""
    out = {state.name: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return {k: v for k, v in out.items() if v}


def given_up(study: optuna.Study) -> list[FrozenTrial]:
    """The last attempts of grid points that spent their crash budget and were not queued again."""
    latest: dict[int, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        first = trial_queue.first_number(t)
        if first not in latest or t.number > latest[first].number:
            latest[first] = t
    return sorted(
        (t for t in latest.values() if t.state == TrialState.FAIL and t.user_attrs.get(trial_queue.GAVE_UP)),
        key=lambda t: t.number,
    )


def incomplete(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """Why a stage is not finished: (trials waiting or running, grid points that gave up).

    A recommendation from a stage with either would rest on part of its grid, so none is
    stored while either list is non-empty (docs/design.md, "Faults").
    """
    return study.get_trials(deepcopy=False, states=UNFINISHED), given_up(study)


def unfinished(study: optuna.Study) -> int:
    """Trials waiting or running: the work a stage still has."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
