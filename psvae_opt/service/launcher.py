"""The launcher seam: how a stage's workers start and how the stage command follows them.

A launcher is a :class:`Launcher` in a module of its own, registered here by name in
:data:`LAUNCHERS` (``--launcher NAME``) and imported when a stage asks for it, so that the
command line reads the names without importing any launcher:

- :meth:`Launcher.check` refuses in one line what it cannot do, before anything is created;
- :meth:`Launcher.start` starts the workers (or nothing: the stage is then left to others);
- :meth:`Launcher.follow` follows them until no trial of the stage waits or runs.

``local`` (:mod:`psvae_opt.service.local_launcher`) starts worker processes on this machine;
``slurm`` (:mod:`psvae_opt.service.slurm_launcher`) submits them as a job array. Every worker
is the same ``psvae-opt worker`` command (:mod:`psvae_opt.service.follow` builds it), so a
runner of N identical workers on a shared database needs no launcher at all (README, "Adding
a launcher").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from psvae_opt.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import optuna

    from psvae_opt.config import Config
    from psvae_opt.search.storage import StudyDatabase
    from psvae_opt.service.request import StageOutcome, StageRequest

# name -> the module whose LAUNCHER it is
LAUNCHERS = {"local": "psvae_opt.service.local_launcher", "slurm": "psvae_opt.service.slurm_launcher"}


class Launcher:
    """Starts a stage's workers and follows them; subclasses override what they do differently."""

    name = ""
    scripts = False  # prints a batch script with --dry-run instead of starting anything

    def check(self, req: StageRequest, cfg: Config, url: str) -> None:
        """Refuse in one line a request this launcher cannot serve (``url``: the resolved storage)."""

    def devices(self, req: StageRequest) -> list[str]:
        """The ``CUDA_VISIBLE_DEVICES`` entries of the workers it starts on this machine (checked)."""
        return []

    def starts_workers(self, req: StageRequest, devices: list[str]) -> bool:
        """Whether this request starts workers (then the data and the mlflow extra are checked first)."""
        return False

    def script(self, req: StageRequest, cfg: Config) -> tuple[str, Path]:
        """``--dry-run``: the batch script and where it would be written."""
        raise ConfigError("--dry-run prints the SLURM batch script: use it with --launcher slurm")

    def start(
        self,
        req: StageRequest,
        cfg: Config,
        db: StudyDatabase,
        study: optuna.Study,
        devices: list[str],
        outcome: StageOutcome,
    ) -> Any | None:
        """Start the stage's workers; returns what :meth:`follow` needs, or None when the stage
        is not followed (nothing started, or the launcher returns at once)."""
        raise NotImplementedError

    def follow(self, started: Any, study: optuna.Study, db: StudyDatabase) -> int:
        """Follow the started workers until no trial waits or runs; returns the workers that failed."""
        raise NotImplementedError


def get_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``."""
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher {name!r}: choose one of {', '.join(LAUNCHERS)}")
    return importlib.import_module(LAUNCHERS[name]).LAUNCHER
