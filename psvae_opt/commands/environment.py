"""The environment variables psvae-opt reads, every one of them, read here at the command edge
and handed down as explicit arguments: nothing under ``psvae_opt`` but this module reads
``os.environ`` (tests/test_environment.py scans for it). Setting variables for a child
process (a worker's environment) is not reading, and happens where the child is started.

Each variable is read when a command needs it, not up front, so that a malformed variable
troubles only the commands that use it.

================================  ============================================================
``PSVAE_OPT_STORAGE``             the study database URL when ``--storage`` is not given
``PSVAE_OPT_DB_PATIENCE``         seconds of database outage a process rides out (default 300)
``PSVAE_OPT_HEARTBEAT``           seconds between a running trial's heartbeats (default 30)
``PSVAE_OPT_GPU_LOCKS``           the lock folder of ``--gpu auto``
``PSVAE_OPT_ARTIFACTS``           where this machine mounts the dashboard's artifact folder
``CUDA_VISIBLE_DEVICES``          the GPUs this process sees (``--gpus`` indices count them)
``CUDA_MPS_PIPE_DIRECTORY``       NVIDIA MPS's pipe folder, where a running daemon is found
================================  ============================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from psvae_opt.errors import StorageError

# The names that only this module uses; those that messages below name, or that a launcher
# sets for its workers, live with them (storage.ENV_VAR, gpu_slots.GPU_LOCKS_ENV, ...) and are
# imported where they are read, so that `train` does not import Optuna to read its environment.
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def storage_url(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``--storage``, else ``$PSVAE_OPT_STORAGE`` (empty counts as unset), else None: the
    database is then ``psvae-opt.db`` in the working directory
    (:func:`psvae_opt.search.storage.resolve_url`)."""
    from psvae_opt.search.storage import ENV_VAR

    return flag or _environ(environ).get(ENV_VAR) or None


def _positive_number(name: str, default: float, environ: Mapping[str, str] | None, integer: bool = False) -> float:
    value = _environ(environ).get(name)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 1):
        kind = "a whole number of seconds" if integer else "a number of seconds"
        raise StorageError(f"{name}={value!r}: give {kind} >= 1")
    return number


def heartbeat_interval(environ: Mapping[str, str] | None = None) -> int:
    """Seconds between a running trial's heartbeats (``$PSVAE_OPT_HEARTBEAT``, default 30)."""
    from psvae_opt.search.storage import DEFAULT_HEARTBEAT, HEARTBEAT_ENV

    return int(_positive_number(HEARTBEAT_ENV, DEFAULT_HEARTBEAT, environ, integer=True))


def db_patience(environ: Mapping[str, str] | None = None) -> float:
    """Seconds of database outage a process rides out (``$PSVAE_OPT_DB_PATIENCE``, default 300)."""
    from psvae_opt.search.storage import DEFAULT_PATIENCE, PATIENCE_ENV

    return _positive_number(PATIENCE_ENV, DEFAULT_PATIENCE, environ)


def gpu_locks(environ: Mapping[str, str] | None = None) -> str | None:
    """The lock folder of ``--gpu auto`` (``$PSVAE_OPT_GPU_LOCKS``); None: the private default."""
    from psvae_opt.service.gpu_slots import GPU_LOCKS_ENV

    return _environ(environ).get(GPU_LOCKS_ENV) or None


def artifacts(environ: Mapping[str, str] | None = None) -> str | None:
    """Where this machine mounts the artifact folder (``$PSVAE_OPT_ARTIFACTS``); None: as recorded."""
    from psvae_opt.reports.dashboard import ARTIFACT_ENV

    return _environ(environ).get(ARTIFACT_ENV) or None


def cuda_visible(environ: Mapping[str, str] | None = None) -> str | None:
    """This process's ``CUDA_VISIBLE_DEVICES`` as given (None when unset; "" hides every GPU)."""
    return _environ(environ).get(CUDA_VISIBLE)


def mps_pipe(environ: Mapping[str, str] | None = None) -> str | None:
    """NVIDIA MPS's pipe folder (``$CUDA_MPS_PIPE_DIRECTORY``); None: its default."""
    from psvae_opt.training.gpus import MPS_PIPE_ENV

    return _environ(environ).get(MPS_PIPE_ENV) or None
