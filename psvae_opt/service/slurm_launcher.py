"""The ``slurm`` launcher: the stage's workers as one SLURM job array (its batch script and the
SLURM commands: :mod:`psvae_opt.service.slurm`), followed until the stage is done; an array
that ended before the stage (time limits, preemption) is submitted again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from psvae_opt.config import Config
from psvae_opt.data import session_bytes
from psvae_opt.errors import ConfigError, DataError
from psvae_opt.search import space
from psvae_opt.search.storage import ENV_VAR, StudyDatabase
from psvae_opt.search.study import unfinished
from psvae_opt.service import slurm
from psvae_opt.service.follow import StageProgress, worker_argv
from psvae_opt.service.launcher import Launcher
from psvae_opt.service.request import StageOutcome, StageRequest

log = logging.getLogger(__name__)


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
        worker_argv=worker_argv(req.config_path, req.overrides, [req.stage], ["--wait", "600"]),
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
    while True:
        states = slurm.task_states(job_id, n_tasks)
        progress.update()
        if all(state in slurm.DONE_STATES for state in states.values()):
            return states
        time.sleep(poll)


def _report_failures(job_id: str, states: dict[int, str]) -> int:
    failed = {task: state for task, state in states.items() if state not in ("COMPLETED", slurm.FINISHED)}
    for task, state in failed.items():
        log.warning("array task %s_%d ended %s", job_id, task, state)
    return len(failed)


class SlurmLauncher(Launcher):
    name = "slurm"
    scripts = True

    def check(self, req: StageRequest, cfg: Config, url: str) -> None:
        check_slurm_request(req, cfg, url)

    def starts_workers(self, req: StageRequest, devices: list[str]) -> bool:
        return not req.dry_run

    def script(self, req: StageRequest, cfg: Config) -> tuple[str, Path]:
        return slurm_script(req, cfg)

    def start(
        self,
        req: StageRequest,
        cfg: Config,
        db: StudyDatabase,
        study: optuna.Study,
        devices: list[str],
        outcome: StageOutcome,
    ) -> Callable[[], int] | None:
        """Write the batch script beside the run folders and submit it; with ``--no-wait`` the
        stage is not followed."""
        outcome.script, outcome.script_path = slurm_script(req, cfg)
        outcome.script_path.parent.mkdir(parents=True, exist_ok=True)
        (outcome.script_path.parent / "logs").mkdir(exist_ok=True)
        outcome.script_path.write_text(outcome.script)
        url = {ENV_VAR: db.url}
        job_id = outcome.job_id = slurm.submit(outcome.script_path, env=url)
        if req.no_wait:
            return None
        path = outcome.script_path
        return lambda: follow_slurm(
            job_id, req.workers or 1, study, db, resubmit=lambda tasks: slurm.submit(path, env=url, tasks=tasks)
        )

    def follow(self, started: Callable[[], int], study: optuna.Study, db: StudyDatabase) -> int:
        return started()


LAUNCHER = SlurmLauncher()
