"""The launchers a stage can start its workers with, by name (``--launcher``).

Light on purpose: the command line reads the names when it builds its parser, before any
command has run, so nothing heavy is imported here.
"""

from __future__ import annotations

LAUNCHERS = ("local", "slurm")
