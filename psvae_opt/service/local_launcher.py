"""The ``local`` launcher: worker processes on this machine, one GPU each (or several per GPU,
or the CPU), followed until the stage is done; a worker that dies while trials remain is replaced.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from psvae_opt.config import Config
from psvae_opt.search.storage import StudyDatabase
from psvae_opt.search.study import unfinished
from psvae_opt.service.follow import StageProgress, wait_until_done, worker_argv, worker_env
from psvae_opt.service.launcher import Launcher
from psvae_opt.service.request import StageOutcome, StageRequest
from psvae_opt.service.slurm import GPU_FLAG
from psvae_opt.training import devices, gpus

log = logging.getLogger(__name__)


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


def local_worker_env(i: int, devices: Sequence[str], n_workers: int, cpus: int | None = None) -> dict[str, str]:
    """What local worker ``i`` adds to its environment: its one GPU (none: the CPU) and its
    share of the cores as ``OMP_NUM_THREADS``, GPU workers included: left unset, each of N
    processes starts one thread per core of the machine and they crowd each other out."""
    threads = max(1, (cpus or os.cpu_count() or 1) // n_workers)
    return {"CUDA_VISIBLE_DEVICES": devices[i % len(devices)] if devices else "", "OMP_NUM_THREADS": str(threads)}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@dataclass
class LocalWorkers:
    """Worker processes of this machine: worker i sees the single device ``devices[i % len(devices)]``
    (a ``CUDA_VISIBLE_DEVICES`` entry) and trains on it with ``--gpu 0``; with no devices workers
    train on the CPU and share its cores."""

    argv: Sequence[str]
    env: Mapping[str, str]
    devices: Sequence[str]
    n_workers: int
    log_dir: Path
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, i: int) -> subprocess.Popen:
        extra = local_worker_env(i, self.devices, self.n_workers)
        command = [*self.argv, GPU_FLAG, "0"] if self.devices else list(self.argv)
        path = self.log_dir / f"worker-{i}.log"
        out = path.open("a")
        log.info("worker %d: device %s, log %s", i, extra["CUDA_VISIBLE_DEVICES"] or "CPU", path)
        self.procs[i] = subprocess.Popen(command, env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT)
        return self.procs[i]


def start_local(
    argv: Sequence[str], env: Mapping[str, str], devices: Sequence[str], n_workers: int, log_dir: Path
) -> LocalWorkers:
    """Start ``n_workers`` worker processes (logs in ``log_dir``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = LocalWorkers(argv, env, devices, n_workers, log_dir)
    for i in range(n_workers):
        workers.start(i)
    return workers


def follow_local(workers: LocalWorkers, study: optuna.Study, db: StudyDatabase) -> int:
    """Follow local workers until the stage is done; returns the workers that exited with an error.

    A worker that dies while trials remain is replaced (at most ``2 n_workers`` times), so a
    crash costs one re-queued trial, not the stage. Ctrl-C or SIGTERM stops every worker
    cleanly (their trials are re-queued).
    """
    procs, n_workers = workers.procs, workers.n_workers
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
                    log.warning("worker %d exited with %s (log: %s)", i, code, workers.log_dir / f"worker-{i}.log")
                    if restarts < 2 * n_workers and db.retry(lambda: unfinished(study), what="counting trials"):
                        restarts += 1
                        workers.start(i)
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


def launch_local(
    argv: Sequence[str],
    env: Mapping[str, str],
    devices: Sequence[str],
    n_workers: int,
    study: optuna.Study,
    db: StudyDatabase,
    log_dir: Path,
) -> int:
    """Start ``n_workers`` worker processes and follow them until the stage is done
    (:func:`start_local`, :func:`follow_local`); returns the workers that exited with an error."""
    return follow_local(start_local(argv, env, devices, n_workers, log_dir), study, db)


ELSEWHERE = "elsewhere"  # what start returns for --workers 0 --wait: the workers run elsewhere


class LocalLauncher(Launcher):
    name = "local"

    def devices(self, req: StageRequest) -> list[str]:
        return local_devices(req)

    def starts_workers(self, req: StageRequest, devices: list[str]) -> bool:
        return bool(n_local_workers(req, devices))

    def start(
        self,
        req: StageRequest,
        cfg: Config,
        db: StudyDatabase,
        study: optuna.Study,
        devices: list[str],
        outcome: StageOutcome,
    ) -> LocalWorkers | str | None:
        n_workers = n_local_workers(req, devices)
        if n_workers:
            argv = worker_argv(req.config_path, req.overrides, [req.stage])
            log_dir = Path(cfg.study.runs_dir) / study.study_name / "workers"
            return start_local(argv, worker_env(db), devices, n_workers, log_dir)
        return ELSEWHERE if req.wait else None

    def follow(self, started: LocalWorkers | str, study: optuna.Study, db: StudyDatabase) -> int:
        if isinstance(started, LocalWorkers):
            return follow_local(started, study, db)
        wait_until_done(study, db)
        return 0


LAUNCHER = LocalLauncher()
