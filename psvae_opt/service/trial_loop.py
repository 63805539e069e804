"""Workers: processes that pop queued trials of a study and train them until none is left.

The launcher enqueues every trial before any worker starts; a worker only ever pops WAITING
trials (atomically, :mod:`psvae_opt.search.trial_queue`), so no grid point runs twice. While a trial
trains, a heartbeat thread stamps it. Between trials a worker looks for trials of dead
workers (no heartbeat for a grace period, by the database's clock) and re-queues them; the
next attempt resumes from the run's ``last.pt``. A worker that was itself cut off from the
database waits a whole grace period after it reconnects before it judges others, so an
outage never fails a live trial (docs/design.md, "Faults").

SIGTERM, SIGINT and SIGUSR1 (SLURM's warning before a time limit or preemption) stop a worker
after the current batch (or before the end-of-run evaluation and diagnostics); its trial is
re-queued on the signal budget, not the crash budget. A worker that finds nothing to take near
a stage's end exits after a grace period instead of holding its GPU (:func:`leave_when_idle`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt.errors import PsvaeError, StorageError, first_line
from psvae_opt.search import trial_queue
from psvae_opt.search.objective import TrialContext, objective
from psvae_opt.search.recommendation import top_up
from psvae_opt.search.storage import GRACE_BEATS, TRANSIENT, StudyDatabase, error_line
from psvae_opt.search.study import point_key, unfinished

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopFlag:
    """Set by a stop signal; training polls it before every batch. ``cause`` names the signal."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.cause = ""

    def install(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.cause = signal.Signals(signum).name
            log.warning("worker %d got %s: stopping after the current batch", os.getpid(), self.cause)
            self.event.set()

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.event.is_set()


class Heartbeat:
    """Stamps a running trial every interval; notices when another worker failed it as stale."""

    def __init__(self, db: StudyDatabase, study: optuna.Study, tid: int, interval: float, on_lost: Callable[[], None]):
        self.db, self.study, self.tid, self.interval, self.on_lost = db, study, tid, interval, on_lost
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{tid}")

    def _run(self) -> None:
        failed = False
        while not self.stop.wait(self.interval):
            try:
                if trial_queue.get_trial(self.study, self.tid).state != TrialState.RUNNING:
                    log.warning("trial id %d was re-queued by another worker; stopping it here", self.tid)
                    self.on_lost()
                    return
                trial_queue.stamp(self.study, self.tid)
                if failed:  # through again: the worker's grace period starts now
                    self.db.last_failure, failed = time.monotonic(), False
            except Exception as exc:  # a database outage: try again next beat
                self.db.last_failure, failed = time.monotonic(), True
                log.warning("heartbeat of trial id %d failed: %s", self.tid, error_line(exc))

    def __enter__(self) -> Heartbeat:
        self.thread.start()  # the first stamp came with the pop
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def requeue_stale(study: optuna.Study, grace: float, unwatched: dict[int, float]) -> list[int]:
    """Re-queue RUNNING trials whose heartbeat is older than ``grace`` seconds (database clock),
    and those seen without any heartbeat for over ``grace`` seconds (their worker died between
    taking them and the first stamp); ``unwatched`` remembers when each was first seen so."""
    requeued = []
    ages = trial_queue.heartbeat_ages(study)
    for tid in [t for t in unwatched if t not in ages or ages[t] is not None]:
        del unwatched[tid]
    for tid, age in ages.items():
        if age is None:
            first_seen = unwatched.setdefault(tid, time.monotonic())
            if time.monotonic() - first_seen <= grace:
                continue
            reason = "its worker died before the first heartbeat"
        elif age > grace:
            reason = f"no heartbeat for {age:.0f} s (grace {grace:.0f} s): its worker died"
        else:
            continue
        if trial_queue.requeue(study, tid, reason, "crash") is not None:
            requeued.append(tid)
    return requeued


def judge_others(db: StudyDatabase, study: optuna.Study, grace: float, unwatched: dict[int, float]) -> list[int]:
    """:func:`requeue_stale`, once this worker has been connected for a whole grace period.

    A worker that was cut off from the database cannot tell a dead worker from one that was
    cut off as well: both stopped stamping. Waiting ``grace`` seconds after reconnecting gives
    every live worker time to stamp its trial again, so an outage of any length fails no live
    trial (as long as each process rides it out: ``PSVAE_OPT_DB_PATIENCE``).
    """
    if db.connected_for() < grace:
        return []
    return db.retry(lambda: requeue_stale(study, grace, unwatched), what="checking for dead workers")


def _duplicate_of(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """Another live attempt of the same grid point (two processes queued it at once), or None."""
    if trial_queue.fixed_point(trial) is None:  # an adaptive trial: its sampler draws its point
        return None
    key, first = point_key(trial_queue.point_of(trial)), trial_queue.first_number(trial)
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        same_point = other.number != trial.number and point_key(trial_queue.point_of(other)) == key
        if same_point and (other.state == TrialState.COMPLETE or trial_queue.first_number(other) != first):
            return other.number
    return None


def owner_check(
    db: StudyDatabase, study: optuna.Study, tid: int, number: int, lost: threading.Event
) -> Callable[[], None]:
    """What a trial's fit calls before each write to its run folder: the trial must still be
    RUNNING in the database. A worker that was paused (SIGSTOP, a frozen VM, swap) past its
    heartbeat while another worker took its trial over stops here, before it writes anything
    into the folder the next attempt now owns (docs/design.md, "Faults")."""

    def check() -> None:
        if lost.is_set() or not db.retry(lambda: trial_queue.still_running(study, tid), what="checking a trial"):
            lost.set()
            log.warning("trial %d was taken over by another worker; this attempt stops without writing", number)
            raise KeyboardInterrupt(f"trial {number} was taken over")

    return check


def _attr_writer(db: StudyDatabase) -> Callable[[optuna.Trial, dict[str, Any]], None]:
    def write(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            db.retry(lambda k=key, v=value: trial.set_user_attr(k, v), what=f"recording {key} of trial {trial.number}")

    return write


def run_one(
    db: StudyDatabase, study: optuna.Study, tid: int, ctx: TrialContext, stop: StopFlag, interval: float
) -> TrialState:
    """Train one popped trial under a heartbeat (every ``interval`` seconds) and record how it ended."""
    lost = threading.Event()
    trial = db.retry(lambda: optuna.Trial(study, tid), what="opening a trial")
    frozen = db.retry(lambda: trial_queue.get_trial(study, tid), what="reading a trial")
    duplicate = db.retry(lambda: _duplicate_of(study, frozen), what="reading the trials")
    if duplicate is not None:
        db.retry(lambda: trial_queue.fail(study, tid, f"a duplicate of trial {duplicate}"), what="failing a duplicate")
        log.info("trial %d is a duplicate of trial %d; dropped", frozen.number, duplicate)
        return TrialState.FAIL
    first = trial_queue.first_number(frozen)
    if first != frozen.number:
        log.info(
            "trial %d continues trial %d's run (attempt after %s)", frozen.number, first, trial_queue.lineage(frozen)
        )
    try:
        with Heartbeat(db, study, tid, interval, lost.set):
            values = objective(
                trial,
                ctx,
                first,
                should_stop=lambda: stop() or lost.is_set(),
                write_attrs=_attr_writer(db),
                owner_check=owner_check(db, study, tid, frozen.number, lost),
            )
        told = db.retry(lambda: study.tell(trial, values), what="reporting a trial")
    except KeyboardInterrupt:
        if lost.is_set():
            return TrialState.FAIL  # another worker already re-queued it
        reason = f"stopped by {stop.cause or 'a signal'}"
        db.retry(lambda: trial_queue.requeue(study, tid, reason, "signal"), what="re-queueing a trial")
        return TrialState.FAIL
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
        if isinstance(exc, ValueError) and "Cannot tell" not in str(exc):
            return _failed(db, study, tid, frozen.number, exc)
        log.warning(
            "trial %d was re-queued by another worker meanwhile; its next attempt resumes its run", frozen.number
        )
        return TrialState.FAIL
    except TRANSIENT + (StorageError,) as exc:  # the database, not the trial, failed: run it again
        log.error("trial %d lost the database (%s); re-queueing it", frozen.number, first_line(exc))
        db.retry(lambda: trial_queue.requeue(study, tid, "the database was unreachable", "crash"), what="re-queueing")
        return TrialState.FAIL
    except Exception as exc:  # the trial fails, the worker goes on
        return _failed(db, study, tid, frozen.number, exc)
    log.info("trial %d complete: %s", frozen.number, values)
    if ctx.hooks.on_complete is not None:
        try:
            ctx.hooks.on_complete(study, told)
        except Exception as exc:  # tracking is best effort: the trial is complete whatever it says
            log.warning("trial %d: on_complete hook failed (%s: %s)", frozen.number, type(exc).__name__, exc)
    return TrialState.COMPLETE


def _failed(db: StudyDatabase, study: optuna.Study, tid: int, number: int, exc: BaseException) -> TrialState:
    message = str(exc) if isinstance(exc, PsvaeError) else f"{type(exc).__name__}: {exc}"
    log.error("trial %d failed: %s", number, message)
    db.retry(lambda: trial_queue.fail(study, tid, message), what="failing a trial")
    return TrialState.FAIL


def all_done(db: StudyDatabase, study: optuna.Study) -> bool:
    """No trial waiting or running, seen twice a second apart: a re-queue writes the FAIL and
    the next attempt's WAITING copy in two transactions, and a worker looking in between would
    leave the copy with no one to run it."""
    if db.retry(lambda: unfinished(study), what="counting trials"):
        return False
    time.sleep(1.0)
    return db.retry(lambda: unfinished(study), what="counting trials") == 0


def run_worker(
    db: StudyDatabase,
    study: optuna.Study,
    ctx: TrialContext,
    stop: StopFlag,
    *,
    interval: float,
    max_seeds: int | None = None,
) -> int:
    """Pop and run trials until the study has none waiting or running; returns trials completed.

    Args:
        interval: seconds between heartbeats; a trial is stale after GRACE_BEATS of them.
        max_seeds: stage 2 ``--seeds auto``: the seed budget per beta; when the queue runs dry
            this worker queues the next round itself (:func:`psvae_opt.search.recommendation.plan_more_seeds`).
    """
    grace = GRACE_BEATS * interval
    unwatched: dict[int, float] = {}
    done = 0
    idle_since: float | None = None
    while not stop():
        judge_others(db, study, grace, unwatched)
        tid = db.retry(lambda: trial_queue.pop_waiting(study), what="taking a queued trial")
        if tid is None:
            if db.retry(lambda: top_up(study, max_seeds), what="queueing more seeds"):
                continue
            if all_done(db, study):
                break
            idle_since = idle_since or time.monotonic()
            if leave_when_idle(db, idle_since, grace, max_seeds):
                log.info("worker %d: no trial waits and others run the rest: exiting to free its GPU", os.getpid())
                break
            stop.event.wait(min(interval, 5))  # others are running: wait in case one dies
            continue
        idle_since = None
        done += run_one(db, study, tid, ctx, stop, interval) == TrialState.COMPLETE
    return done


def leave_when_idle(db: StudyDatabase, idle_since: float, grace: float, max_seeds: int | None) -> bool:
    """Whether a worker with nothing to take should exit rather than hold its GPU (or its SLURM
    allocation) until every running trial has finished: once it has been idle, and connected,
    for a whole grace period, it has judged the others' heartbeats at least once, so a dead
    worker's trial went back to the queue. A trial whose worker dies later is re-queued by a
    worker still running, or by the next array the launcher submits for trials left. With
    ``--seeds auto`` idle workers stay: the last trial of a round queues the next round."""
    if max_seeds:
        return False
    return time.monotonic() - idle_since >= grace and db.connected_for() >= grace
