"""What a stage command asks for (:class:`StageRequest`) and what it prints (:class:`StageOutcome`):
the terms :mod:`psvae_opt.service.stage_run` and every launcher (:mod:`psvae_opt.service.launcher`)
speak in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial

from psvae_opt.search.records import Recommendation
from psvae_opt.search.storage import DEFAULT_PATIENCE


@dataclass(frozen=True)
class StageRequest:
    """What a stage command asks for: its command-line options (``storage``: ``--storage``, else
    ``$PSVAE_OPT_STORAGE``) and the environment it runs in."""

    stage: int
    config_path: str
    overrides: tuple[str, ...] = ()
    storage: str | None = None
    workers: int | None = None
    gpus: tuple[str, ...] = ()
    workers_per_gpu: int = 1
    launcher: str = "local"  # a name of psvae_opt.service.launcher.LAUNCHERS
    wait: bool = False  # with no local workers: follow the stage until others finish it
    no_wait: bool = False  # slurm: return once the array is submitted
    dry_run: bool = False  # slurm: print the batch script, submit nothing
    sampler: str | None = None
    n_trials: int | None = None
    seeds: int | Literal["auto"] | None = None
    initial_seeds: int | None = None  # --seeds auto; default stage2.initial_seeds
    max_seeds: int | None = None  # --seeds auto; default stage2.max_seeds
    criterion: str | None = None  # stage 2's selection criterion; default stage2.criterion
    alpha: float | None = None
    n_unsup: int | None = None
    # the environment, read by the command edge (psvae_opt.commands.environment)
    patience: float = DEFAULT_PATIENCE  # seconds of database outage ridden out
    artifacts: str | None = None  # where this machine mounts the artifact folder (None: the default)
    cuda_visible: str | None = None  # the launcher's CUDA_VISIBLE_DEVICES: what --gpus indices count
    mps_pipe: str | None = None  # NVIDIA MPS's pipe folder (None: its default)


@dataclass
class StageOutcome:
    """What a stage command prints."""

    study: optuna.Study | None
    queued: int = 0
    worker_failures: int = 0
    followed: bool = True
    script: str | None = None
    script_path: Path | None = None
    job_id: str | None = None
    recommendation: Recommendation | None = None
    summary: list[dict[str, Any]] = field(default_factory=list)
    gave_up: list[FrozenTrial] = field(default_factory=list)
    unfinished: list[FrozenTrial] = field(default_factory=list)  # waiting or running when the launcher ended
    counts: dict[str, int] = field(default_factory=dict)
    front: list[FrozenTrial] = field(default_factory=list)
    storage_shown: str = ""  # the database, password hidden
