"""The error hierarchy of psvae-opt.

Every error a user can cause (a bad study file, a malformed HDF5 file, an unreachable
database) is a :class:`PsvaeError` whose message names the bad value and the fix. The CLI
prints such errors as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# The optional extras of pyproject.toml and the top-level modules each one provides.
EXTRAS: dict[str, tuple[str, ...]] = {
    "poses": ("sleap_io", "pynwb", "ndx_pose", "hdf5plugin"),
    "mlflow": ("mlflow", "optuna_integration"),
}


class PsvaeError(Exception):
    """Base class of every error psvae-opt reports to a user."""


class ConfigError(PsvaeError):
    """A study file or a ``--set`` override is invalid."""


class DataError(PsvaeError):
    """An input data file (HDF5, video, pose file) is missing, malformed or inconsistent."""


class StorageError(PsvaeError):
    """The study database cannot be reached or does not hold what was asked for."""


class TrainingError(PsvaeError):
    """Training cannot go on (for example the loss became NaN)."""


class MissingExtraError(PsvaeError):
    """A format, importer or option needs an optional extra that is not installed."""


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent missing, or a module whose spec is unset
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(what: str, extra: str, modules: Sequence[str] | None = None) -> None:
    """Refuse ``what`` in one line when a module of the optional ``extra`` is not installed.

    ``modules`` are the ones ``what`` imports (default: every module of the extra). Called
    before any work is done, so that a missing library costs nothing and writes nothing.

    Raises:
        MissingExtraError: "nwb output needs the poses extra (pynwb is not installed):
            pip install 'psvae-opt[poses]'".
    """
    missing = missing_modules(EXTRAS[extra] if modules is None else modules)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"{what} needs the {extra} extra ({' and '.join(missing)} {verb} not installed): "
            f"pip install 'psvae-opt[{extra}]'"
        )


def first_line(error: BaseException | str, empty: str | None = None) -> str:
    """The first non-blank line of an error message, stripped: what a one-line message quotes.

    A message with no such line (``RuntimeError()``, a blank stderr) gives ``empty`` when
    given, else the exception's type name (``"no message"`` for a string), never an IndexError.
    """
    line = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), None)
    if line is not None:
        return line
    if empty is not None:
        return empty
    return type(error).__name__ if isinstance(error, BaseException) else "no message"
