"""The error hierarchy of psvae-opt.

Every error a user can cause (a bad study file, a malformed HDF5 file, an unreachable
database) is a :class:`PsvaeError` whose message names the bad value and the fix. The CLI
prints such errors as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


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
