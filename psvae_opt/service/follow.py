"""What every launcher shares: the worker's command line and environment, and following a stage.

Every worker is the same ``psvae-opt worker`` command a remote machine runs. The storage URL
reaches it through its environment (``PSVAE_OPT_STORAGE``), never its command line, where
``ps`` would show a password. A launcher follows its stage with a progress bar of its trials
until no trial waits or runs (:func:`wait_until_done` when the workers run elsewhere).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState

from psvae_opt.search.storage import ENV_VAR, StudyDatabase
from psvae_opt.search.study import unfinished

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


def wait_until_done(study: optuna.Study, db: StudyDatabase, poll: float = 10.0) -> None:
    """Follow a stage whose workers run elsewhere until no trial waits or runs."""
    progress = StageProgress(study)
    try:
        while db.retry(lambda: unfinished(study), what="counting trials"):
            progress.update()
            time.sleep(poll)
    finally:
        progress.close()
