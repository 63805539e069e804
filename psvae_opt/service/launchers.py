"""Launchers: how a stage's workers start and how the launcher follows them to the end.

Every worker is the same ``psvae-opt worker`` command a remote machine runs. The storage URL
reaches it through its environment (``PSVAE_OPT_STORAGE``), never its command line, where
``ps`` would show a password. ``local`` starts worker processes on this machine (one GPU
each, or several per GPU); ``slurm`` submits them as one job array (:mod:`psvae_opt.service.slurm`).
Either way the launcher then follows the stage: a progress bar of its trials, dead local
workers replaced, a job array that ended before the stage (time limits, preemption) submitted
again, and it returns once no trial waits or runs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState

from psvae_opt.search.storage import ENV_VAR, StudyDatabase
from psvae_opt.search.study import unfinished
from psvae_opt.service.slurm import GPU_FLAG

log = logging.getLogger(__name__)


def worker_argv(
    config: str | Path, overrides: Sequence[str], stages: Sequence[int], extra: Sequence[str] = ()
) -> list[str]:
    """The ``psvae-opt worker`` command line (absolute paths, no storage URL)."""
    sets = [a for o in overrides for a in ("--set", o)]
    return [
        sys.executable, "-m", "psvae_opt.cli", "worker", "--config", str(Path(config).resolve()), *sets,
        "--stage", *map(str, stages), *extra,
    ]  # fmt: skip


def worker_env(db: StudyDatabase, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: this one, UTC, the storage URL, unbuffered output."""
    return {**os.environ, "TZ": "UTC", "PYTHONUNBUFFERED": "1", ENV_VAR: db.url, **(extra or {})}


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
        except Exception:  # progress is cosmetic; a database hiccup is not fatal
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


def local_worker_env(i: int, devices: Sequence[str], n_workers: int, cpus: int | None = None) -> dict[str, str]:
    """What local worker ``i`` adds to its environment: its one GPU (none: the CPU) and its
    share of the cores as ``OMP_NUM_THREADS``, GPU workers included: left unset, each of N
    processes starts one thread per core of the machine and they crowd each other out."""
    threads = max(1, (cpus or os.cpu_count() or 1) // n_workers)
    return {"CUDA_VISIBLE_DEVICES": devices[i % len(devices)] if devices else "", "OMP_NUM_THREADS": str(threads)}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def launch_local(
    argv: Sequence[str],
    env: Mapping[str, str],
    devices: Sequence[str],
    n_workers: int,
    study: optuna.Study,
    db: StudyDatabase,
    log_dir: Path,
) -> int:
    """Start ``n_workers`` worker processes and follow them until the stage is done.

    Worker i sees the single device ``devices[i % len(devices)]`` (a ``CUDA_VISIBLE_DEVICES``
    entry of this machine) and trains on it with ``--gpu 0``; with no devices workers train
    on the CPU and share its cores. A worker that dies while trials remain is replaced (at
    most ``2 n_workers`` times), so a crash costs one re-queued trial, not the stage. Ctrl-C
    or SIGTERM stops every worker cleanly (their trials are re-queued).

    Returns:
        the number of workers that exited with an error.
    """
    log_dir.mkdir(parents=True, exist_ok=True)

    def start(i: int) -> subprocess.Popen:
        extra = local_worker_env(i, devices, n_workers)
        command = [*argv, GPU_FLAG, "0"] if devices else list(argv)
        out = (log_dir / f"worker-{i}.log").open("a")
        log.info("worker %d: device %s, log %s", i, extra["CUDA_VISIBLE_DEVICES"] or "CPU", log_dir / f"worker-{i}.log")
        return subprocess.Popen(command, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT)

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
                    if restarts < 2 * n_workers and db.retry(lambda: unfinished(study), what="counting trials"):
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


def wait_until_done(study: optuna.Study, db: StudyDatabase, poll: float = 10.0) -> None:
    """Follow a stage whose workers run elsewhere until no trial waits or runs."""
    progress = StageProgress(study)
    try:
        while db.retry(lambda: unfinished(study), what="counting trials"):
            progress.update()
            time.sleep(poll)
    finally:
        progress.close()


def follow_slurm(
    job_id: str,
    n_tasks: int,
    study: optuna.Study,
    db: StudyDatabase,
    resubmit: Callable[[int], str] | None = None,
    poll: float = 5.0,
) -> int:
    """Follow a submitted job array until the stage is done; returns the tasks that failed.

    The tasks end on their own once no trial is left, or earlier at a time limit or a
    preemption: their workers re-queue their trials and exit. An array that ends with trials
    left is submitted again by ``resubmit(k)`` (the new job id; ``k`` tasks, one per trial
    left, at most ``n_tasks``), and so on, except after a cancelled task (``scancel``: the user
    stops the stage) or two arrays in a row that changed nothing (their tasks fail at once:
    their logs say why). Ctrl-C stops following, not the job.
    """
    progress = StageProgress(study)
    failed, stalled = 0, 0
    try:
        while True:
            before = db.retry(lambda: _changes(study), what="reading the study")
            states = _follow_array(job_id, n_tasks, progress, poll)
            failed += _report_failures(job_id, states)
            left = db.retry(lambda: unfinished(study), what="counting trials")
            if not left or resubmit is None:
                break
            stalled = stalled + 1 if db.retry(lambda: _changes(study), what="reading the study") == before else 0
            if "CANCELLED" in states.values() or stalled > 1:
                why = "a task was cancelled" if "CANCELLED" in states.values() else "it changed nothing (see its logs)"
                log.warning("job array %s ended with %d trial(s) left and %s; run the stage again", job_id, left, why)
                break
            old, n_tasks = job_id, min(left, n_tasks)
            job_id = resubmit(n_tasks)
            log.warning("job array %s ended with %d trial(s) left: submitted it again as %s", old, left, job_id)
    except KeyboardInterrupt:
        log.warning("stopped following job %s; its tasks keep running (scancel %s stops them)", job_id, job_id)
        raise
    finally:
        progress.close()
    return failed


def _changes(study: optuna.Study) -> tuple[int, int]:
    """What an array changes when it works: trials (a re-queue adds one) and complete trials."""
    trials = study.get_trials(deepcopy=False)
    return len(trials), sum(t.state == TrialState.COMPLETE for t in trials)


def _follow_array(job_id: str, n_tasks: int, progress: StageProgress, poll: float) -> dict[int, str]:
    """Wait until every task of a job array has ended; returns how each ended."""
    from psvae_opt.service import slurm

    while True:
        states = slurm.task_states(job_id, n_tasks)
        progress.update()
        if all(state in slurm.DONE_STATES for state in states.values()):
            return states
        time.sleep(poll)


def _report_failures(job_id: str, states: dict[int, str]) -> int:
    from psvae_opt.service import slurm

    failed = {task: state for task, state in states.items() if state not in ("COMPLETED", slurm.FINISHED)}
    for task, state in failed.items():
        log.warning("array task %s_%d ended %s", job_id, task, state)
    return len(failed)
