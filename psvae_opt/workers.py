"""Workers: processes that pop queued trials of a study and train them until none is left.

The launcher (``stage1``/``stage2``) enqueues every trial before any worker starts; a worker
only ever pops WAITING trials (atomically, in the database), so no grid point runs twice.
While a trial trains, a heartbeat thread stamps it; a worker that finds another's trial
stale fails it, and the retry callback queues a copy that resumes from the run's
``last.pt``. SIGTERM or Ctrl-C stops a worker after the current batch; its trial is
re-queued the same way. Local workers are ``psvae-opt worker`` subprocesses, the same
command a remote machine runs.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from psvae_opt.errors import ConfigError, PsvaeError, StorageError
from psvae_opt.objectives import TrialContext, objective, original_number
from psvae_opt.storage import MAX_RETRIES, TRANSIENT, heartbeat_interval, with_retries

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT; training polls it after every batch."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        def handler(signum: int, _frame) -> None:
            log.warning("worker %d got %s: stopping after the current batch", os.getpid(), signal.Signals(signum).name)
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def __call__(self) -> bool:
        return self.event.is_set()


class Heartbeat:
    """Stamps a running trial every interval; notices when the trial was failed as stale."""

    def __init__(
        self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float, on_lost: Callable[[], None]
    ):
        self.storage, self.trial_id, self.interval, self.on_lost = storage, trial_id, interval, on_lost
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial_id}")

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
                    log.warning("trial id %d was failed as stale by another worker; stopping it here", self.trial_id)
                    self.on_lost()
                    return
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:
                log.warning("heartbeat of trial id %d failed: %s", self.trial_id, str(exc).splitlines()[0])

    def __enter__(self) -> Heartbeat:
        self.thread.start()  # the first stamp came with the pop (pop_waiting)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def pop_waiting(study: optuna.Study) -> int | None:
    """Atomically take one WAITING trial (compare-and-set to RUNNING) and stamp its first
    heartbeat at once, so that it is never RUNNING unwatched; None when none is left."""
    storage, study_id = study._storage, study._study_id
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                trial_id = trial._trial_id
                with_retries(lambda t=trial_id: storage.record_heartbeat(t), what="stamping a trial")
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def requeue_unwatched(study: optuna.Study, older_than: float) -> list[int]:
    """Re-queue RUNNING trials that never got a heartbeat (their worker died between taking
    them and the first stamp) once they started more than ``older_than`` seconds ago.

    Optuna's stale-trial check skips trials without a heartbeat, so without this such a
    trial would stay RUNNING forever and its stage would never end.
    """
    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    engine = getattr(storage, "_backend", storage).engine  # optuna wraps the RDBStorage in a cache
    with engine.connect() as conn:
        stamped = {row[0] for row in conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}
    now = datetime.datetime.now()  # datetime_start is the worker's local time: run workers with TZ=UTC
    orphans = [
        t._trial_id
        for t in running
        if t._trial_id not in stamped
        and t.datetime_start is not None
        and (now - t.datetime_start).total_seconds() > older_than
    ]
    for trial_id in orphans:
        log.warning("trial id %d has been RUNNING without a heartbeat for over %.0f s: re-queued", trial_id, older_than)
        requeue(study, trial_id, "its worker died before the first heartbeat; re-queued")
    return orphans


def requeue(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Fail a trial and queue a retry that resumes from its checkpoint (as for a dead worker)."""
    storage = study._storage
    storage.set_trial_user_attr(trial_id, "error", reason)
    if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, storage.get_trial(trial_id))


def _unfinished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def _all_done(study: optuna.Study) -> bool:
    """No trial waiting or running, seen twice a second apart: a re-queue writes the FAIL and
    the retry's WAITING copy in two transactions, and a worker looking in between would
    leave the copy with no one to run it."""
    if with_retries(lambda: _unfinished(study), what="counting trials"):
        return False
    time.sleep(1.0)
    return with_retries(lambda: _unfinished(study), what="counting trials") == 0


def _set_attrs_retrying(trial: optuna.Trial, attrs: dict) -> None:
    """User attributes, written through a database outage (a restart loses nothing)."""
    for key, value in attrs.items():
        with_retries(lambda k=key, v=value: trial.set_user_attr(k, v), what=f"recording {key} of trial {trial.number}")


def run_one(study: optuna.Study, trial_id: int, ctx: TrialContext, stop: StopFlag, interval: float) -> TrialState:
    """Train one popped trial under a heartbeat and record how it ended."""
    lost = threading.Event()
    ctx.should_stop = lambda: stop() or lost.is_set()
    storage = study._storage
    trial = with_retries(lambda: optuna.Trial(study, trial_id), what="opening a trial")
    first = original_number(with_retries(lambda: storage.get_trial(trial_id), what="reading a trial"))
    with Heartbeat(storage, trial_id, interval, lost.set):
        try:
            values = objective(trial, ctx, first)
        except KeyboardInterrupt:
            if lost.is_set():
                return TrialState.FAIL  # another worker already failed and re-queued it
            with_retries(lambda: requeue(study, trial_id, "stopped by a signal; re-queued"), what="re-queueing a trial")
            log.info("trial %d re-queued; its retry resumes from the last epoch", trial.number)
            return TrialState.FAIL
        except TRANSIENT + (StorageError,) as exc:  # the database, not the trial, failed: run it again
            log.error("trial %d lost the database (%s); re-queueing it", trial.number, str(exc).splitlines()[0])
            with_retries(
                lambda: requeue(study, trial_id, "the database was unreachable; re-queued"), what="re-queueing a trial"
            )
            return TrialState.FAIL
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PsvaeError) else str(exc)
            log.error("trial %d failed: %s", trial.number, message)
            with_retries(lambda: storage.set_trial_user_attr(trial_id, "error", message), what="recording an error")
            with_retries(lambda: storage.set_trial_state_values(trial_id, TrialState.FAIL), what="failing a trial")
            return TrialState.FAIL
    try:
        with_retries(lambda: study.tell(trial, values), what="reporting a trial")
    except optuna.exceptions.UpdateFinishedTrialError:
        return TrialState.FAIL  # failed as stale meanwhile; its retry reruns from the checkpoint
    log.info("trial %d complete: %s", trial.number, values)
    return TrialState.COMPLETE


def run_worker(study: optuna.Study, ctx: TrialContext, stop: StopFlag | None = None) -> int:
    """Pop and run trials until the study has none waiting or running; returns trials completed."""
    stop = stop or StopFlag()
    ctx.write_attrs = _set_attrs_retrying
    interval = heartbeat_interval()
    done = 0
    while not stop():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with_retries(lambda: optuna.storages.fail_stale_trials(study), what="checking for dead workers")
        with_retries(lambda: requeue_unwatched(study, older_than=3 * interval), what="checking for dead workers")
        trial_id = with_retries(lambda: pop_waiting(study), what="taking a queued trial")
        if trial_id is None:
            if _all_done(study):
                break
            stop.event.wait(min(interval, 5))  # others are running: wait in case one dies
            continue
        done += run_one(study, trial_id, ctx, stop, interval) == TrialState.COMPLETE
    return done


def worker_command(
    config: str, overrides: Sequence[str], stage: int, storage: str, extra: Sequence[str] = ()
) -> list[str]:
    """The ``psvae-opt worker`` command line for a local worker process."""
    sets = [a for o in overrides for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "psvae_opt.cli",
        "worker",
        "--config",
        config,
        *sets,
        "--stage",
        str(stage),
        "--storage",
        storage,
        *extra,
    ]


def launch_local(command: list[str], n_workers: int, gpus: Sequence[str], study: optuna.Study, log_dir: Path) -> int:
    """Start ``n_workers`` worker processes (round-robin over ``gpus``, CPU when none) and wait.

    A worker that dies while trials remain is replaced (at most ``2 n_workers`` times), so a
    crash costs one re-queued trial, not the stage. Ctrl-C stops every worker cleanly.
    Returns the number of workers that exited with an error.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // n_workers) if not gpus else None

    def start(i: int) -> subprocess.Popen:
        env = dict(os.environ, TZ="UTC", PYTHONUNBUFFERED="1")
        env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)] if gpus else ""
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        out = (log_dir / f"worker-{i}.log").open("a")
        log.info("worker %d: %s (GPU %s)", i, " ".join(command[2:5]), env["CUDA_VISIBLE_DEVICES"] or "none, CPU")
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    procs = {i: start(i) for i in range(n_workers)}
    restarts, failures = 0, 0
    progress = StageProgress(study)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` of the launcher stops its workers too
    try:
        while procs:
            time.sleep(1.0)
            progress.update()
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[i]
                if code != 0:
                    failures += 1
                    log.warning("worker %d exited with %s (log: %s)", i, code, log_dir / f"worker-{i}.log")
                    if restarts < 2 * n_workers and with_retries(lambda: _unfinished(study), what="counting trials"):
                        restarts += 1
                        procs[i] = start(i)
    except KeyboardInterrupt:
        log.warning("stopping %d workers; their trials are re-queued", len(procs))
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    return failures


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class StageProgress:
    """A progress bar of a stage's trials (complete of all), with the epochs of running ones."""

    def __init__(self, study: optuna.Study, every: float = 5.0) -> None:
        from tqdm import tqdm

        self.study, self.every, self.last, self.logged = study, every, 0.0, -1
        # on a terminal a live bar; in a log file one line per finished trial instead
        self.bar = tqdm(total=0, desc=study.study_name, unit="trial", disable=not sys.stderr.isatty())

    def update(self) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        try:
            trials = self.study.get_trials(deepcopy=False)
        except Exception:
            return
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        self.bar.total = done + len(running) + sum(t.state == TrialState.WAITING for t in trials)
        self.bar.n = done
        epochs = ", ".join(f"#{t.number} epoch {t.user_attrs.get('epochs_done', 0)}" for t in running)
        self.bar.set_postfix_str(f"running: {epochs}" if running else "", refresh=False)
        self.bar.refresh()
        if self.bar.disable and done != self.logged:
            self.logged = done
            log.info("%s: %d of %d trials complete", self.study.study_name, done, self.bar.total)

    def close(self) -> None:
        self.last = 0.0
        self.update()
        self.bar.close()


def check_gpus(gpus: str | None) -> list[str]:
    """Parse ``--gpus 0,1`` into device ids."""
    if not gpus:
        return []
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not all(g.isdigit() for g in ids):
        raise ConfigError(f"--gpus {gpus!r}: give GPU indices separated by commas, e.g. --gpus 0,1")
    return ids
