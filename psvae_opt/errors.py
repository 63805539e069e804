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
