"""The trial queue: every use of Optuna beyond its public API, in one module.

psvae-opt runs its own worker loop instead of ``study.optimize`` (docs/design.md, "Workers"),
so it needs four things Optuna keeps private. They live here, and tests/test_trial_queue.py
checks them against the pinned Optuna:

- **pop**: take one WAITING trial atomically (compare-and-set to RUNNING in the database),
  as Optuna's own ``Study._pop_waiting_trial_id`` does, and stamp its first heartbeat at once;
- **heartbeat**: Optuna's heartbeat table, stamped and read with the *database's* clock, so
  that workers on machines whose clocks disagree judge staleness alike; and the state read of
  :func:`still_running` before every write to a run folder (one attempt owns a folder at a time);
- **retry lineage**: a re-queued trial is a new WAITING trial with the same grid point and
  the lineage in its user attributes (:data:`FIRST`, :data:`CRASHES`, :data:`SIGNALS`): every
  attempt trains in the first attempt's run folder and resumes its checkpoint. Crashes and
  signals have separate budgets (a trial preempted ten times must still complete);
- **ids and system attributes**: trial and study ids, a study's system attributes and raw
  parameter writes (for the rating twins of :mod:`psvae_opt.reports.ratings`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

FIRST = "first_trial"  # number of the first attempt of a grid point: the run folder of every retry
CRASHES = "crash_retries"  # attempts lost to dead workers, crashes and database faults
SIGNALS = "signal_requeues"  # attempts stopped by a signal (preemption, time limit, scancel, Ctrl-C)
REQUEUED_FROM = "requeued_from"  # the number of the attempt this one replaces
GAVE_UP = "gave_up"  # set on the last attempt once the crash budget is spent
MAX_CRASH_RETRIES = 3
MAX_SIGNAL_REQUEUES = 100
Cause = Literal["crash", "signal"]

_HEARTBEATS = sqlalchemy.table(
    "trial_heartbeats", sqlalchemy.column("trial_id"), sqlalchemy.column("heartbeat", sqlalchemy.DateTime)
)
_TRIALS = sqlalchemy.table(
    "trials", sqlalchemy.column("trial_id"), sqlalchemy.column("study_id"), sqlalchemy.column("state")
)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    return trial._trial_id


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def _engine(study: optuna.Study) -> sqlalchemy.Engine:
    storage = _storage(study)
    return getattr(storage, "_backend", storage).engine  # optuna wraps the RDBStorage in a cache


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """A study's system attributes (optuna 5 has no public getter)."""
    return _storage(study).get_study_system_attrs(study_id(study))


def set_trial_param(study: optuna.Study, trial: optuna.Trial, name: str, value: Any, dist: Any) -> None:
    """Give a running trial a parameter value without sampling it."""
    _storage(study).set_trial_param(trial_id(trial), name, dist.to_internal_repr(value), dist)


def get_trial(study: optuna.Study, tid: int) -> FrozenTrial:
    return _storage(study).get_trial(tid)


def stamp(study: optuna.Study, tid: int) -> None:
    """Record a heartbeat of a running trial (database time)."""
    _storage(study).record_heartbeat(tid)


def pop_waiting(study: optuna.Study) -> int | None:
    """Atomically take one WAITING trial (compare-and-set to RUNNING) and stamp its first
    heartbeat at once, so that it is never RUNNING unwatched for long; None when none waits."""
    storage = _storage(study)
    for trial in storage.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.RUNNING):
                stamp(study, trial_id(trial))
                return trial_id(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def heartbeat_ages(study: optuna.Study) -> dict[int, float | None]:
    """Seconds since each RUNNING trial's last heartbeat by the database's clock (None: never stamped)."""
    query = (
        sqlalchemy.select(_TRIALS.c.trial_id, _HEARTBEATS.c.heartbeat)
        .select_from(_TRIALS.outerjoin(_HEARTBEATS, _HEARTBEATS.c.trial_id == _TRIALS.c.trial_id))
        .where(
            _TRIALS.c.study_id == study_id(study),
            sqlalchemy.cast(_TRIALS.c.state, sqlalchemy.String) == TrialState.RUNNING.name,  # a PostgreSQL enum
        )
    )
    with _engine(study).connect() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one().replace(tzinfo=None)
        rows = conn.execute(query).all()
    return {tid: None if beat is None else (now - beat.replace(tzinfo=None)).total_seconds() for tid, beat in rows}


def still_running(study: optuna.Study, tid: int) -> bool:
    """Whether a trial is still RUNNING: the one read a worker makes before each write to the
    trial's run folder. Another worker that finds the trial stale fails it before it queues
    the next attempt, so an attempt that reads RUNNING here still owns the folder."""
    query = sqlalchemy.select(sqlalchemy.cast(_TRIALS.c.state, sqlalchemy.String)).where(_TRIALS.c.trial_id == tid)
    with _engine(study).connect() as conn:
        state = conn.execute(query).scalar_one_or_none()
    return state == TrialState.RUNNING.name


def first_number(trial: FrozenTrial) -> int:
    """The number of the first attempt of a trial's grid point (its own number when it is the first).

    Studies of older psvae-opt versions kept it in the system attribute of optuna's retry callback.
    """
    return int(trial.user_attrs.get(FIRST, trial.system_attrs.get("failed_trial", trial.number)))


def fixed_point(trial: FrozenTrial) -> dict[str, Any] | None:
    """The grid point a queued trial was given (Optuna's ``fixed_params``), or None for a trial
    whose sampler draws its point (tpe, nsga2)."""
    return trial.system_attrs.get("fixed_params") or None


def point_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's point: the parameters it has (drawn or fixed), else those it was queued with
    (empty for an adaptive trial that has not drawn yet)."""
    return dict(trial.params) if trial.params else dict(fixed_point(trial) or {})


def lineage(trial: FrozenTrial) -> dict[str, int]:
    """The lineage attributes of a trial, with zeros where it is a first attempt."""
    return {
        FIRST: first_number(trial),
        CRASHES: int(trial.user_attrs.get(CRASHES, 0)),
        SIGNALS: int(trial.user_attrs.get(SIGNALS, 0)),
    }


def requeue(study: optuna.Study, tid: int, reason: str, cause: Cause) -> FrozenTrial | None:
    """Fail a running trial and queue its next attempt, which resumes from the run's checkpoint.

    ``cause`` picks the budget: ``"crash"`` (:data:`MAX_CRASH_RETRIES`) or ``"signal"``
    (:data:`MAX_SIGNAL_REQUEUES`). Once a budget is spent the trial is failed with
    :data:`GAVE_UP` set and nothing is queued; running its stage again resumes it.

    Returns:
        the failed attempt, or None when another process finished or failed it first.
    """
    storage = _storage(study)
    old = storage.get_trial(tid)
    line = lineage(old)
    key = CRASHES if cause == "crash" else SIGNALS
    budget = MAX_CRASH_RETRIES if cause == "crash" else MAX_SIGNAL_REQUEUES
    gave_up = line[key] >= budget
    try:
        storage.set_trial_user_attr(tid, "error", reason)
        if gave_up:
            storage.set_trial_user_attr(tid, GAVE_UP, True)
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    if gave_up:
        log.error(
            "trial %d %s gave up after %d %s re-queues (%s); run the stage again to resume it from its last epoch",
            old.number,
            point_of(old),
            line[key],
            cause,
            reason,
        )
        return storage.get_trial(tid)
    line[key] += 1
    study.enqueue_trial(point_of(old), user_attrs={**line, REQUEUED_FROM: old.number})
    log.warning(
        "trial %d %s re-queued (%s; %s re-queue %d of %d); its next attempt resumes run %d's checkpoint",
        old.number,
        point_of(old),
        reason,
        cause,
        line[key],
        budget,
        line[FIRST],
    )
    return storage.get_trial(tid)


def queue_again(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a fresh attempt of a failed trial's grid point: a new crash budget, the same run folder."""
    line = lineage(trial)
    line[CRASHES] = 0
    study.enqueue_trial(point_of(trial), user_attrs={**line, REQUEUED_FROM: trial.number})
    log.info("trial %d %s queued again; it resumes run %d's checkpoint", trial.number, point_of(trial), line[FIRST])


def fail(study: optuna.Study, tid: int, message: str) -> bool:
    """Fail a running trial for good (an error in the trial itself); False if it had finished."""
    storage = _storage(study)
    try:
        storage.set_trial_user_attr(tid, "error", message)
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True
