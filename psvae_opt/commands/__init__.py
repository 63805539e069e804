"""Command handlers of the CLI, one module per concern; ``psvae_opt.cli`` assembles them.

Owns: ``service`` (stage1, stage2, worker, export, status: the commands of the search
service, :mod:`psvae_opt.service`), ``train``, ``data``, ``report``,
``dashboard`` and ``inference`` (model export, encode): argument parsing, building a request,
printing. Each module exposes ``COMMANDS``: name -> :class:`Command` (or a dict of subcommands).
``environment``: the only module of psvae-opt that reads environment variables; commands pass
what it reads down as explicit arguments.
May import: every package above (``errors`` to ``service``, ``inference`` included).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

STORAGE_HELP = "study database URL (default: $PSVAE_OPT_STORAGE, else sqlite:///psvae-opt.db here)"


@dataclass(frozen=True)
class Command:
    """One command: its help line, how it adds its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_config_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config FILE`` and repeatable ``--set section.key=value``."""
    p.add_argument("--config", required=required, metavar="FILE", help="study file (TOML), e.g. studies/demo.toml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one study-file key, e.g. --set train.max_epochs=5 (repeatable)",
    )


def add_storage_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help=STORAGE_HELP)


def storage_from(args: argparse.Namespace) -> str | None:
    """The storage URL of ``--storage``, else ``$PSVAE_OPT_STORAGE`` (None: the SQLite file
    here); a password on the command line is warned about."""
    from psvae_opt.commands import environment
    from psvae_opt.search.storage import warn_password

    if args.storage:
        warn_password(args.storage)
    return environment.storage_url(args.storage)


def open_database_from(args: argparse.Namespace, must_exist: bool = True, read_only: bool = False):
    """The study database of :func:`storage_from` with the outage patience of the environment;
    ``must_exist`` for commands that only read, ``read_only`` for those that change nothing
    (status, export, report)."""
    from psvae_opt.commands import environment
    from psvae_opt.search.storage import open_database

    url = storage_from(args)
    return open_database(url, must_exist=must_exist, read_only=read_only, patience=environment.db_patience())


def load_config_from(args: argparse.Namespace):
    """The study file of ``--config`` with the ``--set`` overrides applied."""
    from psvae_opt.config import load_config

    return load_config(args.config, args.overrides)
